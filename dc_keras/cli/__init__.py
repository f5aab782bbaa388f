"""Command-line tools of dc_keras (console scripts declared in setup.cfg)."""


def one_line(error: BaseException) -> str:
    """The message of `error` on one line, for "<prog>: error: ..." (library messages may span several)."""
    return " ".join(str(error).split())
