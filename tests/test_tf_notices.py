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


def test_conversion_chatter_is_dropped_and_warnings_kept():
    code = ("import os\nfrom dc_keras import _tf_notices\nwith _tf_notices.filtered(conversion=True):\n"
            "    os.write(2, b'I0000 00:00:1.0  1 loader.cc:236] Restoring SavedModel bundle.\\n')\n"
            "    os.write(2, b'INFO:tensorflow:Assets written to: /tmp/x/assets\\n')\n"
            "    os.write(2, b'W0000 00:00:1.0  1 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.\\n')\n"
            "    os.write(2, b'W0000 00:00:1.0  1 something.cc:1] a real warning\\n')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_CHILD_ENV, timeout=300)
    assert run.stderr.splitlines() == [b"W0000 00:00:1.0  1 something.cc:1] a real warning"]


def test_export_prints_no_conversion_chatter(tmp_path):
    code = ("import dc_keras, keras, numpy as np\n"
            "m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name='fc')])\n"
            "w, b = m.layers[0].get_weights()\n"
            "m.layers[0].set_weights([np.where(np.arange(w.size).reshape(w.shape) % 3 == 0, 0.5, 0.0), b])\n"
            f"dc_keras.export_tflite(m, {str(tmp_path / 'm.tflite')!r})\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_CHILD_ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "m.tflite").is_file()
    chatter = [line for line in run.stderr.splitlines() if _tf_notices._CONVERSION_CHATTER.search(line)]
    assert not chatter, chatter
    assert b"Saved artifact" not in run.stdout and b"TensorSpec" not in run.stdout


def test_conversion_hides_keras_export_printout():
    code = ("import sys\nfrom dc_keras import _tf_notices\nwith _tf_notices.filtered(conversion=True):\n"
            "    print(\"Saved artifact at '/tmp/x'. The following endpoints are available:\")\n"
            "print('after')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_CHILD_ENV, timeout=300)
    assert run.stdout.splitlines() == [b"after"]
