"""horovodrun's "was Horovod built with Gloo?" check is asked once per installation and kept in
larsbench's cache, keyed by the extension file; the next launch reads the kept answer."""

import json
import os

from larsbench.backends.horovod_run import extension_key, gloo_built_once
from larsbench.core.cache import cache_dir


def test_the_answer_is_asked_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LARSBENCH_CACHE", str(tmp_path))  # its planted answer stays here
    key = extension_key()
    assert key is not None and os.path.isfile(key["extension"]) and key["extension"].endswith(".so")
    assert gloo_built_once() is True  # this Horovod has Gloo (its ranks run on it in every backend test)
    path = cache_dir() / "horovod_gloo_built.json"
    name = json.dumps(key, sort_keys=True, separators=(",", ":"))
    assert json.loads(path.read_text())[name] == 1.0
    # A kept "no" (planted) is what the next launch believes: it did not ask the extension again.
    path.write_text(json.dumps({name: 0.0}))
    assert gloo_built_once() is False


def test_a_rebuilt_extension_is_asked_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LARSBENCH_CACHE", str(tmp_path))
    key = extension_key()
    path = cache_dir() / "horovod_gloo_built.json"
    stale = json.dumps({**key, "mtime_ns": key["mtime_ns"] - 1}, sort_keys=True, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({stale: 0.0}))
    assert gloo_built_once() is True
