"""The command line never destroys data and reports every user error in one line."""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import smooth_cube, tool_env

from hsicomp import cli
from hsicomp.io.container import unpack
from hsicomp.io.cubeio import write_cube

SHAPE = (3, 8, 8)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A cube, its .hsic file, an ENVI copy, a folder, a fifo and a pickled model."""
    import torch

    cube = np.random.default_rng(0).integers(0, 4096, SHAPE, dtype=np.uint16)
    paths = {"cube": tmp_path / "c.npy", "hsic": tmp_path / "c.hsic",
             "envi": tmp_path / "e.hdr", "dir": tmp_path / "d.npy",
             "fifo": tmp_path / "f.hsic", "pickled": tmp_path / "pickled.pt"}
    np.save(paths["cube"], cube)
    assert cli.main(["encode", str(paths["cube"]), str(paths["hsic"]), "--codec", "raw"]) == 0
    write_cube(paths["envi"], cube)
    paths["dir"].mkdir()
    os.mkfifo(paths["fifo"])
    torch.save(torch.nn.Linear(2, 2), paths["pickled"])  # a pickled module, not weights only
    return paths


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every regular file in ``folder`` (fifos and folders by kind)."""
    out = {}
    for path in sorted(folder.iterdir()):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[path.name] = stat.filemode(mode)
    return out


def refused(argv: list[str], folder: Path, capsys: pytest.CaptureFixture) -> str:
    """Run ``hsicomp argv``; check a one-line error, no traceback and no file changed."""
    capsys.readouterr()
    before = digests(folder)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("hsicomp: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert digests(folder) == before
    return err


def expand(argv: list[str], files: dict[str, Path], tmp_path: Path) -> list[str]:
    """Fill ``{cube}``, ``{hsic}``, ... and ``{tmp}`` in a command-line template."""
    names = {key: str(path) for key, path in files.items()} | {"tmp": str(tmp_path)}
    return [arg.format(**names) for arg in argv]


@pytest.mark.parametrize("argv", [
    ["encode", "{cube}", "{cube}", "--codec", "jpegls"],
    ["encode", "{cube}", "{tmp}/link.hsic", "--codec", "jpegls"],
    ["encode", "{cube}", "{tmp}/hard.hsic", "--codec", "jpegls"],
    ["encode", "{envi}", "{tmp}/e.img", "--codec", "raw"],  # the ENVI data file
    ["decode", "{tmp}/hsic.npy", "{tmp}/hsic.npy"],
    ["decode", "{tmp}/e.img", "{envi}"],  # writes e.img
    ["bdrate", "{cube}", "--out", "{cube}"],
    ["extract", "{hsic}", "--dest", "{tmp}/x", "--stamp", "{hsic}"],
    ["import-checkpoint", "{pickled}", "{pickled}"],
], ids=lambda argv: " ".join(argv))
def test_output_is_never_an_input(argv: list[str], files: dict[str, Path], tmp_path: Path,
                                  capsys) -> None:
    (tmp_path / "link.hsic").symlink_to(files["cube"])
    os.link(files["cube"], tmp_path / "hard.hsic")
    os.link(files["hsic"], tmp_path / "hsic.npy")
    err = refused(expand(argv, files, tmp_path), tmp_path, capsys)
    assert "refusing to overwrite it" in err


@pytest.mark.parametrize("output, message", [
    ("{dir}", "d.npy: is a directory"),
    ("{fifo}", "f.hsic: not a regular file"),
    ("{cube}/x.hsic", "c.npy is not a directory"),
    ("{cube}/a/x.hsic", "c.npy is not a directory"),
    ("/proc/x.hsic", "cannot write in /proc"),
])
def test_outputs_that_are_not_regular_files(output: str, message: str,
                                            files: dict[str, Path], tmp_path: Path,
                                            capsys) -> None:
    """A folder or fifo is not replaced by a file; nothing is written below a file."""
    if output.startswith("/") and not Path(output).parent.is_dir():
        pytest.skip(f"no {Path(output).parent}")
    for argv in (["encode", "{cube}", output, "--codec", "raw"],
                 ["decode", "{hsic}", output.replace(".hsic", ".npy")]):
        argv = expand(argv, files, tmp_path)
        assert message in refused(argv, tmp_path, capsys)
    assert stat.S_ISFIFO(files["fifo"].stat().st_mode)


def test_os_errors_are_one_line(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A command failing on an OS error (a file where it makes a folder) says so in one line."""
    err = refused(["prepare", "--spec", '{"kind": "synthetic"}', "--out", str(files["cube"])],
                  tmp_path, capsys)
    assert str(files["cube"]) in err


@pytest.mark.parametrize("argv, message", [
    (["--codec", "ccsds123", "--delta", str(2**32)], "delta 4294967296 is too large"),
    (["--codec", "ccsds123", "--delta", str(2**63)], "at most 65535"),
    (["--codec", "coolchic", "--param", "lr=1000"], "lr must be in (0, 1]"),
    (["--codec", "coolchic", "--param", "lr=1e308"], "lr must be in (0, 1]"),
    (["--codec", "jpegls", "--dims", "0,1,1"], "argument --dims"),
    (["--codec", "jpegls", "--delta", "abc"], "argument --delta: invalid int value"),
    (["--codec", "jpegxl", "--param", "effort=11"], "effort must be an integer in 1..10"),
    (["--codec", "jpegxl", "--param", "effort=0"], "effort must be an integer in 1..10"),
    (["--codec", "ccsds123", "--threads", "-1"], "argument --threads"),
    (["--codec", "linerwkv", "--param", "threads=-1"], "threads must be >= 0"),
    (["--codec", "linerwkv", "--model", "{dir}"], "d.npy: is a directory"),
    (["--codec", "linerwkv", "--model", "{pickled}"], "not a weights-only hsicomp model file"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_encode_parameters(argv: list[str], message: str, files: dict[str, Path],
                               tmp_path: Path, capsys) -> None:
    argv = expand(["encode", "{cube}", "{tmp}/o.hsic", *argv], files, tmp_path)
    assert message in refused(argv, tmp_path, capsys)


@pytest.mark.parametrize("argv, message", [
    (["encode", "{dir}", "{tmp}/o.hsic", "--codec", "raw"], "d.npy: is a directory"),
    (["decode", "{dir}", "{tmp}/o.npy"], "d.npy: is a directory"),
    (["info", "{fifo}"], "f.hsic: not a regular file"),
    (["model-info", "{pickled}"], "not a weights-only hsicomp model file"),
    (["model-info", "{dir}"], "d.npy: is a directory"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_inputs(argv: list[str], message: str, files: dict[str, Path], tmp_path: Path,
                    capsys) -> None:
    assert message in refused(expand(argv, files, tmp_path), tmp_path, capsys)


def test_threads_is_accepted_by_every_codec(files: dict[str, Path], tmp_path: Path) -> None:
    out, back = tmp_path / "o.hsic", tmp_path / "o.npy"
    assert cli.main(["encode", str(files["cube"]), str(out), "--codec", "ccsds123",
                     "--threads", "2"]) == 0
    assert cli.main(["decode", str(out), str(back), "--threads", "2"]) == 0
    np.testing.assert_array_equal(np.load(back), np.load(files["cube"]))


def test_real_stderr_has_one_line_and_no_warnings(files: dict[str, Path], tmp_path: Path) -> None:
    """Through the real interpreter: torch's warnings and argparse's usage block stay out."""
    before = digests(tmp_path)
    for args in (["model-info", str(files["pickled"])],
                 ["encode", str(files["cube"]), str(tmp_path / "o.hsic"), "--dims", "0,1,1"],
                 ["encode", str(files["cube"]), str(files["cube"]), "--codec", "raw"]):
        proc = subprocess.run([sys.executable, "-m", "hsicomp", *args], capture_output=True,
                              text=True, env=tool_env(), timeout=300)
        assert proc.returncode == 2
        assert proc.stderr.startswith("hsicomp: error: ") and proc.stderr.count("\n") == 1, \
            proc.stderr
    assert digests(tmp_path) == before


def test_output_table_names_real_arguments() -> None:
    """Every output listed for a command is one of its arguments, and every argument named
    like an output file is listed (prepare's --out is a folder)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, dests in cli.OUTPUTS.items():
        assert set(dests) <= {a.dest for a in sub.choices[command]._actions}, command
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.dest in {"out", "output", "png", "pdf", "rd", "per_patch", "stamp"} \
                    and command != "prepare":
                assert action.dest in cli.OUTPUTS.get(command, ()), (command, action.dest)


def test_rows_cols_bands_npy_needs_layout(tmp_path: Path, capsys) -> None:
    """A (rows, cols, bands) .npy is refused in one line; with --layout bip the right cube is
    coded (the same payload as its bands-first copy) and decodes to the same array."""
    cube = smooth_cube((40, 12, 12), 12, seed=1)
    pixels_first = tmp_path / "rcb.npy"
    np.save(pixels_first, cube.transpose(1, 2, 0))
    np.save(tmp_path / "brc.npy", cube)
    out = tmp_path / "o.hsic"
    err = refused(["encode", str(pixels_first), str(out), "--codec", "ccsds123"], tmp_path,
                  capsys)
    assert "rcb.npy: shape (12, 12, 40) looks like (rows, cols, bands)" in err
    assert cli.main(["encode", str(pixels_first), str(out), "--codec", "ccsds123",
                     "--layout", "bip"]) == 0
    assert cli.main(["encode", str(tmp_path / "brc.npy"), str(tmp_path / "brc.hsic"),
                     "--codec", "ccsds123"]) == 0
    header, side, payload = unpack(out.read_bytes())
    plain = unpack((tmp_path / "brc.hsic").read_bytes())
    assert header.shape == (40, 12, 12) and (side, payload) == plain[1:]
    assert header.version == 3 and plain[0].version == 2
    assert cli.main(["decode", str(out), str(tmp_path / "back.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), np.load(pixels_first))
    # --layout bsq takes the array as it is (bands first)
    assert cli.main(["encode", str(pixels_first), str(tmp_path / "as_is.hsic"), "--codec",
                     "ccsds123", "--layout", "bsq"]) == 0
    assert unpack((tmp_path / "as_is.hsic").read_bytes())[0].shape == (12, 12, 40)


@pytest.mark.parametrize("argv, message", [
    (["--layout", "bip"], "applies to .npy and HDF5 inputs only"),
    (["--layout", "xyz"], "argument --layout: invalid choice"),
    (["--nodata", "abc"], "argument --nodata: expected a number, nan, none or file"),
    (["--bands", "0-9"], "band indices [3, 4, 5, 6, 7] out of range for a 3-band file"),
    (["--bands", "x"], "bad band list entry 'x'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_metadata_options(argv: list[str], message: str, files: dict[str, Path],
                              tmp_path: Path, capsys) -> None:
    argv = expand(["encode", "{envi}", "{tmp}/o.hsic", "--codec", "raw", *argv], files,
                  tmp_path)
    assert message in refused(argv, tmp_path, capsys)


def test_codecs_command_describes_every_codec(capsys):
    """Each codec's first docstring line says what it is (no pointer elsewhere)."""
    from hsicomp.codecs.base import available_codecs

    assert cli.main(["codecs"]) == 0
    out = capsys.readouterr().out
    summaries = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in out.splitlines()
                 if line and not line.startswith(" ")}
    assert sorted(summaries) == available_codecs()
    for name, summary in summaries.items():
        assert "docstring" not in summary and len(summary.strip()) > 20, name
