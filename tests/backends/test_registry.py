import sys
import textwrap

from larsbench.backends.registry import backend_names, get_backend
from larsbench.suite.config import build_spec


def test_builtin_backends():
    assert {"ddp", "deepspeed", "horovod"} <= set(backend_names())
    assert get_backend("ddp").name == "ddp"


def test_a_third_party_backend_registers_through_the_entry_point_group(tmp_path, monkeypatch):
    (tmp_path / "acme_backend.py").write_text(textwrap.dedent('''
        from larsbench.backends.ddp import DDPBackend

        class AcmeBackend(DDPBackend):
            name = "acme"
    '''))
    dist_info = tmp_path / "acme_backend-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-backend\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[larsbench.backends]\nacme = acme_backend:AcmeBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "acme" in backend_names()
    assert get_backend("acme").__name__ == "AcmeBackend"
    assert build_spec([("defaults", {"backend": "acme"})]).backend == "acme"
    monkeypatch.delitem(sys.modules, "acme_backend", raising=False)
