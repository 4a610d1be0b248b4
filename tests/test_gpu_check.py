"""The pure parts of the GPU check (bench/gpu_wheels.py): which wheels the GPU machine's CPython
3.12 on x86-64 installs, the 60 MiB and 2,000-character limits, the requirement check of the
wheel set and the coverage check of imported modules. No downloads: wheels are small files
written here, named as PyPI names them."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import gpu_check  # noqa: E402
import gpu_wheels as wheels  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402

from calm_rag.errors import InputError  # noqa: E402

MIB = 2**20


@pytest.mark.parametrize("name", [
    "transformers-5.19.0-py3-none-any.whl",
    "faiss_cpu-1.15.1-cp310-abi3-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "xxhash-4.1.0-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "hf_xet-1.8.0-cp38-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "multiprocess-0.70.19-py312-none-any.whl",
])
def test_wheels_for_cpython_312_on_x86_64_pass(name):
    wheels.check_tags(name)


@pytest.mark.parametrize(("name", "why"), [
    ("xxhash-4.1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "cp311"),  # this machine's Python
    ("faiss_cpu-1.15.1-cp312-cp312-macosx_14_0_arm64.whl", "macosx"),
    ("xxhash-4.1.0-cp312-cp312-manylinux_2_17_aarch64.whl", "aarch64"),
    ("xxhash-4.1.0-cp312-cp312-manylinux_2_34_x86_64.whl", "2_34"),  # newer glibc than 2.28
    ("xxhash-4.1.0-cp312-cp312-win_amd64.whl", "win_amd64"),
    ("xxhash-4.1.0-cp313-abi3-manylinux_2_17_x86_64.whl", "cp313"),  # stable ABI from 3.13
    ("multiprocess-0.70.19-py311-none-any.whl", "py311"),
])
def test_wheels_the_gpu_machine_cannot_install_are_refused(name, why):
    with pytest.raises(InputError) as caught:
        wheels.check_tags(name)
    assert name in str(caught.value) and why in str(caught.value)
    assert "--python-version 3.12" in caught.value.hint


def _wheel(folder: Path, name: str, requires: list[str]) -> wheels.Wheel:
    """A wheel file whose METADATA lists ``requires``."""
    dist, version = name.split("-")[:2]
    path = folder / name
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{dist}-{version}.dist-info/METADATA", "Metadata-Version: 2.1\n"
                         f"Name: {dist}\nVersion: {version}\n"
                         + "".join(f"Requires-Dist: {r}\n" for r in requires))
    return wheels.Wheel(path, dist.replace("_", "-"), version)


def _sized(folder: Path, name: str, size: int) -> wheels.Wheel:
    """A file of exactly ``size`` bytes standing for a wheel (the size check reads no more)."""
    path = folder / name
    with path.open("wb") as handle:
        handle.truncate(size)
    return wheels.Wheel(path, name.split("-")[0], name.split("-")[1])


def test_size_limit_takes_60_mib_and_refuses_a_byte_more(tmp_path):
    exact = [_sized(tmp_path, "a-1.0-py3-none-any.whl", 40 * MIB),
             _sized(tmp_path, "b-1.0-py3-none-any.whl", 20 * MIB)]
    assert wheels.check_size(exact, tree_bytes=0) == 60 * MIB
    over = [*exact, _sized(tmp_path, "c-1.0-py3-none-any.whl", 1)]
    with pytest.raises(InputError, match=r"the wheel set is 60\.0 MiB, over the 60 MiB limit"):
        wheels.check_size(over, tree_bytes=0)


def test_tree_and_wheels_together_must_fit_the_64_mib_a_call_carries(tmp_path):
    wheel = [_sized(tmp_path, "a-1.0-py3-none-any.whl", 50 * MIB)]
    assert wheels.check_size(wheel, tree_bytes=14 * MIB) == 50 * MIB
    with pytest.raises(InputError, match=r"working tree \(14\.0 MiB\) and the wheels \(50\.0 "
                                         r"MiB\) pass the 64 MiB a call carries"):
        wheels.check_size(wheel, tree_bytes=14 * MIB + 1)


def test_command_line_of_2000_characters_passes_and_2001_is_refused():
    assert wheels.check_command("x" * 2000) == 2000
    with pytest.raises(InputError, match="2001 characters, over the 2,000"):
        wheels.check_command("x" * 2001)


def test_the_printed_device_command_fits_and_installs_the_carried_folder():
    assert wheels.check_command(gpu_check.DEVICE_COMMAND) < 400
    assert f"--no-index --target {wheels.TARGET} {wheels.WHEEL_DIR}/*.whl" in (
        gpu_check.DEVICE_COMMAND)
    assert f"PYTHONPATH={wheels.TARGET}:$PWD" in gpu_check.DEVICE_COMMAND
    assert gpu_check.CARRY == [wheels.WHEEL_DIR]
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert f"{wheels.WHEEL_DIR}/" in ignored  # carry must name it because git ignores it


def test_requirements_read_from_a_wheel_keep_those_for_python_312_only(tmp_path):
    wheel = _wheel(tmp_path, "anyio-4.16.0-py3-none-any.whl", [
        'exceptiongroup>=1.0.2; python_version < "3.11"', "idna>=2.8",
        'typing_extensions>=4.16.0; python_version < "3.15"', 'trio>=0.31; extra == "trio"'])
    assert [str(r) for r in wheels.wheel_requirements(wheel.path)] == [
        "idna>=2.8", 'typing_extensions>=4.16.0; python_version < "3.15"']


def test_unmet_requirements_name_the_owner_and_why():
    needs = {"datasets": [Requirement("dill<0.4.2,>=0.3.0"), Requirement("numpy>=1.17"),
                          Requirement("huggingface-hub<3.0,>=1.31.0")],
             "trl": [Requirement("transformers>=4.56.2"), Requirement("accelerate>=1.10.1")]}
    shipped = {"datasets": "5.2.0", "trl": "1.16.0", "transformers": "5.19.0"}
    there = {"numpy": None, "huggingface-hub": "1.5.0", "accelerate": None,
             "transformers": "5.17.0"}
    assert wheels.unmet_requirements(needs, shipped, there) == [
        "datasets needs dill<0.4.2,>=0.3.0 (neither travelling nor on the machine)",
        "datasets needs huggingface-hub<3.0,>=1.31.0 (the machine may have 1.5.0)",
    ]
    # shipping hub 2.4 and dill meets both; a shipped version outside the range does not
    shipped |= {"huggingface-hub": "2.4.0", "dill": "0.4.2"}
    assert wheels.unmet_requirements(needs, shipped, there) == [
        "datasets needs dill<0.4.2,>=0.3.0 (travels at 0.4.2)"]


def test_machine_closure_walks_what_the_machine_has_but_not_what_a_wheel_shadows():
    installed = {"torch": ["jinja2", "filelock"], "jinja2": ["markupsafe>=2.0"],
                 "huggingface-hub": ["httpx2<3,>=2.0.0", "filelock"],
                 "httpx2": ["httpcore2==2.17.0"]}
    there = wheels.machine_closure(installed, shadowed=["huggingface-hub"])
    assert {"jinja2", "markupsafe", "filelock"} <= set(there)
    assert there["torch"] == "2.11.0" and there["jinja2"] is None
    # our hub 2 needs httpx2; the machine's hub 1.x did not pull it in
    assert "httpx2" not in there and "httpcore2" not in there
    assert "httpx2" in wheels.machine_closure(installed)  # walked when not shadowed


def test_coverage_flags_a_module_neither_the_machine_nor_the_wheels_hold():
    holders = {"trl": ["trl"], "faiss": ["faiss-cpu"], "yaml": ["PyYAML"],
               "bm25s": ["bm25s"], "gpu_steps": []}
    modules = ["trl", "faiss", "yaml", "bm25s", "json", "_json", "calm_rag", "gpu_steps",
               "mystery"]
    missing = wheels.uncovered_modules(modules, holders, there=["pyyaml"],
                                       shipped=["trl", "faiss-cpu"],
                                       local=["calm_rag", "gpu_steps"])
    assert missing == ["bm25s (from bm25s)", "mystery (no installed distribution holds it)"]


def test_every_package_design_md_says_is_missing_there_is_not_assumed_there():
    machine = set(wheels.MACHINE)
    assert not machine & set(wheels.NOT_THERE)
    assert {"trl", "datasets", "faiss-cpu"} <= set(wheels.MISSING_THERE)
    assert not set(wheels.MISSING_THERE) & set(wheels.PINNED_OVER_MACHINE)


def test_what_cannot_be_checked_is_printed_with_its_reason(capsys):
    gpu_check.print_not_checkable()
    out = capsys.readouterr().out
    for what in ("vLLM", "faiss-gpu", "DeepSpeed", "multi-GPU accelerate"):
        assert what in out
    assert "336 MB" in out and "135 MB" in out and "one GPU on the machine" in out


def test_blocked_modules_are_those_whose_every_distribution_is_absent():
    holders = {"IPython": ["ipython"], "yaml": ["PyYAML"], "faiss": ["faiss-cpu"],
               "llama_index": ["llama-index-core", "llama-index-vector-stores-faiss"],
               "google": ["protobuf", "googleapis-common-protos"], "_cython_3_2": []}
    assert wheels.blocked_modules(holders, allowed=["pyyaml", "faiss_cpu", "protobuf"]) == {
        "IPython", "llama_index"}


def test_block_refuses_a_module_imported_before_it_could_be_blocked():
    assert "json" in sys.modules
    with pytest.raises(InputError, match="imported before the dry run could block them, and "
                                         "neither on the GPU machine nor in the wheel set: json"):
        wheels.block(["json", "no_such_module_here"])


HIDDEN = """
import importlib.util, sys
sys.path.insert(0, {bench!r})
import gpu_hide
gpu_hide.hide(["yaml"])
assert importlib.util.find_spec("yaml") is None
assert "yaml" not in sys.modules  # unlike sys.modules[name] = None, which datasets misreads
try:
    import yaml
except ModuleNotFoundError as err:
    print("refused:", err)
import json  # what is not hidden imports as before
print(json.dumps([1]))
"""


def test_hidden_modules_import_as_if_not_installed():
    import subprocess

    bench = str(Path(__file__).resolve().parents[1] / "bench")
    done = subprocess.run([sys.executable, "-c", HIDDEN.format(bench=bench)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["refused: No module named 'yaml'", "[1]"]


def test_children_started_after_hide_in_children_cannot_import_the_modules(tmp_path,
                                                                            monkeypatch):
    import importlib.util
    import subprocess

    import gpu_hide

    if importlib.util.find_spec("sitecustomize") is not None:
        pytest.skip("this Python has a sitecustomize of its own, which hiding would shadow")
    monkeypatch.setenv("PYTHONPATH", "")  # restored after the test, as is the variable below
    monkeypatch.setenv(gpu_hide.ENV, "")
    assert gpu_hide.hide_in_children(["yaml"], tmp_path / "hide")
    child = subprocess.run([sys.executable, "-c", "import json\nimport yaml"],
                           capture_output=True, text=True)
    assert child.returncode == 1
    assert child.stderr.strip().splitlines()[-1] == (
        "ModuleNotFoundError: No module named 'yaml'")
