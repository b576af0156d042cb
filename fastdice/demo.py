"""``python -m fastdice.demo``: runs the demo, example code that lives in the source
tree as ``examples/demo.py`` (not part of the library)."""

import pathlib
import runpy
import sys

DEMO = pathlib.Path(__file__).resolve().parents[1] / "examples" / "demo.py"

if __name__ == "__main__":
    if not DEMO.is_file():
        sys.exit(
            "fastdice: the demo is example code in fastdice's source tree (examples/demo.py), which this "
            "installed copy does not include: run `python examples/demo.py` in a checkout of the repository"
        )
    sys.argv[0] = str(DEMO)
    runpy.run_path(str(DEMO), run_name="__main__")
