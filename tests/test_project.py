"""Project metadata: one version everywhere, a licence, a citation file."""

from __future__ import annotations

import re
import tomllib

import yaml
from helpers import REPO

import hsicomp


def test_one_version_everywhere():
    """pyproject, the package, CITATION.cff and the changelog's newest release agree."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert hsicomp.__version__ == version
    assert yaml.safe_load((REPO / "CITATION.cff").read_text())["version"] == version
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (REPO / "CHANGELOG.md").read_text(),
                          flags=re.M)
    assert releases and releases[0] == version


def test_licence_matches_the_package_metadata():
    licence = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert licence == {"text": "MIT"}
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_citation_cites_the_methods_the_codecs_implement():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["license"] == "MIT"
    titles = " ".join(ref["title"].lower() for ref in citation["references"])
    for method in ("line-based attention", "hyspecnet-11k", "ccsds 123.0-b-2",
                   "continuous rate adaptation", "without codebook", "cool-chic"):
        assert method in titles


def test_readme_lists_every_codec_and_links_existing_documents():
    """The README's codec table is the registry; every document it links exists."""
    from hsicomp.codecs.base import available_codecs

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Codecs\n"):]
    table = table[:table.index("\n\n", table.index("|---"))]
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.M)
    assert sorted(listed) == available_codecs()
    for folder, text in [(REPO, readme)] + [(REPO / "docs", p.read_text())
                                           for p in (REPO / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", text):
            assert (folder / target).is_file(), target


def test_no_file_is_mistaken_for_a_dvc_pipeline():
    """DVC reads every dvc.yaml as a pipeline (and `dvc add` fails on anything else)."""
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    assert not [f for f in files if f == "dvc.yaml" or f.endswith("/dvc.yaml")]


def test_docs_describe_every_rd_all_column():
    """docs/results.md's column table names each column `aggregate` writes, and no other."""
    from hsicomp.evaluation.aggregate import RD_COLUMNS

    text = (REPO / "docs" / "results.md").read_text()
    table = text[text.index("| column | meaning |"):]
    table = table[:table.index("\n\n")]
    documented = [name.strip() for cell in re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
                  for name in cell.split(",")]
    assert sorted(documented) == sorted(RD_COLUMNS)
