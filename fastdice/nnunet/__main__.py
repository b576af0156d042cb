"""python -m fastdice.nnunet [env | install-trainer | uninstall-trainer | ext-path] [--target DIR]

env                (the default) print the shell lines to export: nnUNet_extTrainer, which both
                   nnUNetv2_train -tr nnUNetTrainerFastDice and nnUNetv2_predict of its results need
                   to find the trainer, and nnU-Net's data folders
install-trainer    write nnUNetTrainerFastDice.py (one import line) into nnU-Net's trainer folder
                   (or --target DIR), so that nnU-Net finds the trainers without nnUNet_extTrainer
uninstall-trainer  remove that file (only if fastdice wrote it)
ext-path           print the folder to put in nnUNet_extTrainer (nothing is written)
"""

import argparse
import os
import sys

from . import EXT_TRAINER_PATH, TRAINER_NAME

MARKER = "# Written by `python -m fastdice.nnunet install-trainer`; remove with `uninstall-trainer`."
MODULE_TEXT = f"{MARKER}\nfrom fastdice.nnunet.trainer import *  # noqa: F401,F403\n"
#: nnU-Net's data folders: every nnUNetv2_* command reads them from the environment.
DATA_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def nnunet_trainer_folder() -> str:
    try:
        import nnunetv2
    except ImportError as e:
        raise SystemExit(f"fastdice.nnunet: nnunetv2 is not installed ({e})")
    return os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")


def trainer_file(target=None) -> str:
    return os.path.join(target or nnunet_trainer_folder(), f"{TRAINER_NAME}.py")


def _check_target(target) -> None:
    if target is not None and not os.path.isdir(target):
        what = "is not a folder" if os.path.exists(target) else "does not exist"
        raise SystemExit(
            f"fastdice.nnunet: --target {target} {what}; give an existing folder (nnU-Net's trainer folder is "
            f"the default: leave --target out), or create it first"
        )


def install(target=None) -> str:
    _check_target(target)
    path = trainer_file(target)
    if os.path.exists(path):
        with open(path) as f:
            if MARKER not in f.read():
                raise SystemExit(f"fastdice.nnunet: {path} exists and was not written by fastdice; not touching it")
    try:
        with open(path, "w") as f:
            f.write(MODULE_TEXT)
    except OSError as e:
        raise SystemExit(
            f"fastdice.nnunet: cannot write {path} ({e.strerror}); use nnUNet_extTrainer instead, which writes "
            f"nothing: python -m fastdice.nnunet env"
        ) from None
    return path


def uninstall(target=None) -> bool:
    _check_target(target)
    path = trainer_file(target)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        if MARKER not in f.read():
            raise SystemExit(f"fastdice.nnunet: {path} was not written by fastdice; not removing it")
    os.remove(path)
    return True


def export_lines(environ=None) -> str:
    """The shell lines that make nnU-Net's commands find fastdice's trainers, and its data folders
    (as set in this shell; commented out when unset, so that ``eval "$(python -m fastdice.nnunet)"``
    sets nothing wrong). An nnUNet_extTrainer already set keeps its folders after fastdice's."""
    environ = os.environ if environ is None else environ
    current = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p.strip()]
    ext = os.pathsep.join([EXT_TRAINER_PATH] + [p for p in current if os.path.abspath(p) != EXT_TRAINER_PATH])
    lines = [
        "# nnU-Net looks trainers up by name: nnUNetv2_train -tr nnUNetTrainerFastDice (or _<N>epochs)",
        "# and nnUNetv2_predict of its results both need this, in every shell that runs them.",
        f'export nnUNet_extTrainer="{ext}"',
    ]
    for name in DATA_VARIABLES:
        value = environ.get(name)
        if value:
            lines.append(f'export {name}="{value}"')
        else:
            lines.append(f'# export {name}="/path/to/{name}"   (not set in this shell; nnU-Net needs it)')
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastdice.nnunet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="env",
                   choices=["env", "install-trainer", "uninstall-trainer", "ext-path"])
    p.add_argument("--target", help="folder to write to / remove from (default: nnU-Net's trainer folder)")
    args = p.parse_args(argv)
    if args.command == "env":
        print(export_lines())
    elif args.command == "ext-path":
        print(EXT_TRAINER_PATH)
    elif args.command == "install-trainer":
        path = install(args.target)
        print(f"installed {path}\nuse: nnUNetv2_train DATASET CONFIGURATION FOLD -tr {TRAINER_NAME} "
              f"(or {TRAINER_NAME}_5epochs, _10epochs, ...)")
    else:
        removed = uninstall(args.target)
        print(f"removed {trainer_file(args.target)}" if removed else "nothing to remove")
    return 0


if __name__ == "__main__":
    sys.exit(main())
