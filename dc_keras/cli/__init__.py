"""Command-line tools of dc_keras (console scripts declared in setup.cfg)."""
from __future__ import annotations

import sys
from typing import Callable


def one_line(error: BaseException) -> str:
    """The message of `error` on one line, for "<prog>: error: ..." (library messages may span several)."""
    return " ".join(str(error).split())


def run_tool(main: Callable, module_name: str) -> None:
    """Runs an absl `main` as a console script whose --help shows the tool's docstring and its own flags.

    Why: absl's --help prints the docstring and the key flags of the *main* module, which for a console
    script is the generated wrapper (sys.argv[0]), not the module that defines the flags; --helpfull buries
    them under TensorFlow's. TensorFlow's device start-up notices are filtered here too (DC_KERAS_TF_LOGS=1
    shows them).
    """
    from absl import app, flags

    from dc_keras import _tf_notices

    module = sys.modules[module_name]
    main_module = sys.modules.get("__main__")
    if main_module is not None and main_module is not module and not getattr(main_module, "__doc__", None):
        main_module.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    _tf_notices.initialise_tensorflow_quietly()
    app.run(main)


def keras_verbosity(requested) -> int:
    """Keras fit's verbose argument: `requested` when given, else progress bars (1) on a terminal and one
    line per epoch (2) when stdout is a log file or pipe, where bars would write escape codes and carriage
    returns."""
    if requested is not None:
        return int(requested)
    isatty = getattr(sys.stdout, "isatty", None)
    return 1 if isatty is not None and isatty() else 2
