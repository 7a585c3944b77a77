"""The Proxy3D trainer: Qwen2.5-VL reading 3D proxy tokens, four stages under DeepSpeed ZeRO.

Public API (heavy libraries are imported inside the functions):
    trainer.train.train(workflow, stage, overrides=None, resume=False) -> exported model folder
    trainer.predict.predict(checkpoint, shards, records, out, split="val") -> number of predictions
    trainer.model.Proxy3DModel.from_pretrained(folder)                   -> model, no DeepSpeed needed
Entry points: `deepspeed trainer/run.py --stage N --workflow W` (or `python trainer/run.py ...`),
`p3d train`, `p3d predict`. Modules: model (wrapper), positions (3D position embeddings and the
height -> rotary id mapping), objects (<OBJxxx> tokens, glyph embeddings), stages (data builders),
data (shards, collation), loader (per-rank stream), recipes (default stage configs), lora, env.
"""
