"""python -m fastdice.nnunet {install-trainer,uninstall-trainer,ext-path} [--target DIR]

install-trainer    write nnUNetTrainerFastDice.py (one import line) into nnU-Net's trainer folder
                   (or --target DIR), so that `nnUNetv2_train ... -tr nnUNetTrainerFastDice` finds it
uninstall-trainer  remove that file (only if fastdice wrote it)
ext-path           print the folder to put in nnUNet_extTrainer instead (nothing is written)
"""

import argparse
import os
import sys

from . import EXT_TRAINER_PATH, TRAINER_NAME

MARKER = "# Written by `python -m fastdice.nnunet install-trainer`; remove with `uninstall-trainer`."
MODULE_TEXT = f"{MARKER}\nfrom fastdice.nnunet.trainer import {TRAINER_NAME}  # noqa: F401\n"


def nnunet_trainer_folder() -> str:
    try:
        import nnunetv2
    except ImportError as e:
        raise SystemExit(f"fastdice.nnunet: nnunetv2 is not installed ({e})")
    return os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")


def trainer_file(target=None) -> str:
    return os.path.join(target or nnunet_trainer_folder(), f"{TRAINER_NAME}.py")


def install(target=None) -> str:
    path = trainer_file(target)
    if os.path.exists(path):
        with open(path) as f:
            if MARKER not in f.read():
                raise SystemExit(f"fastdice.nnunet: {path} exists and was not written by fastdice; not touching it")
    with open(path, "w") as f:
        f.write(MODULE_TEXT)
    return path


def uninstall(target=None) -> bool:
    path = trainer_file(target)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        if MARKER not in f.read():
            raise SystemExit(f"fastdice.nnunet: {path} was not written by fastdice; not removing it")
    os.remove(path)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastdice.nnunet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["install-trainer", "uninstall-trainer", "ext-path"])
    p.add_argument("--target", help="folder to write to / remove from (default: nnU-Net's trainer folder)")
    args = p.parse_args(argv)
    if args.command == "ext-path":
        print(EXT_TRAINER_PATH)
    elif args.command == "install-trainer":
        path = install(args.target)
        print(f"installed {path}\nuse: nnUNetv2_train DATASET CONFIGURATION FOLD -tr {TRAINER_NAME}")
    else:
        removed = uninstall(args.target)
        print(f"removed {trainer_file(args.target)}" if removed else "nothing to remove")
    return 0


if __name__ == "__main__":
    sys.exit(main())
