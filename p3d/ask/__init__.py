"""`p3d ask`: a question about one scene of your own, answered by a trained checkpoint.

    p3d ask room.mp4 "Find the chair." --checkpoint runs/toy/train/stage4/model

  inputs.py   what SOURCE is (a video, a frame folder, a ScanNet or toy scene folder, a store scene)
  prepare.py  the checkpoint's own workflow, the checks that it fits the scene, and features ->
              cluster for that one scene through the stage drivers, cached per (source, settings)
  answer.py   greedy answers, the scene's prefix encoded once for many questions (KV cache)
  cli.py      the `p3d ask` and `p3d view` commands
"""
