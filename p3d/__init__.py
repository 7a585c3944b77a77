"""The application shell: the `p3d` command (cli.py), the demo and its report, `p3d ask`, `p3d view`
and `p3d plan`. It sits on top of the stages (pipeline/) and the trainer (trainer/), which never
import it (tests/test_layering.py)."""
