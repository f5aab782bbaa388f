"""TensorFlow's start-up notices are filtered from stderr on `import dc_keras`; other stderr output is kept."""
import os
import subprocess
import sys

from dc_keras import _tf_notices

_CHILD_ENV = {k: v for k, v in os.environ.items() if k != _tf_notices.SHOW_ENV}


def test_import_prints_no_tensorflow_notices():
    run = subprocess.run([sys.executable, "-c", "import dc_keras, sys; print('imported', file=sys.stderr)"],
                         capture_output=True, env=_CHILD_ENV, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines == [b"imported"], lines
    assert not [line for line in lines if _tf_notices._NOTICE.search(line)]


def test_other_lines_are_replayed_and_notices_dropped():
    code = ("import os\nfrom dc_keras import _tf_notices\nwith _tf_notices.filtered():\n"
            "    os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on.\\n')\n"
            "    os.write(2, b'a real error\\n')\n"
            "    os.write(2, b'E0000 cuda_platform.cc:52] failed call to cuInit: X\\n')\n")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_CHILD_ENV, timeout=300)
    assert quiet.stderr.splitlines() == [b"a real error"]
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300,
                          env={**_CHILD_ENV, _tf_notices.SHOW_ENV: "1"})
    assert loud.stderr.splitlines()[-3:] == [b"I0000 port.cc:153] oneDNN custom operations are on.", b"a real error",
                                             b"E0000 cuda_platform.cc:52] failed call to cuInit: X"]
