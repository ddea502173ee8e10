"""Every `sh` block of the README and the docs runs as written against a
site like `make run`'s (real lighttpd, haproxy and stunnel): the same
var/pki/ paths, the same 127.0.0.1 address, only the port is the test
site's. `text` blocks are commands for a real appliance or a pair and are
shown, not run."""
import glob
import os
import re
import subprocess

import pytest

from .conftest import ROOT

PAGES = ["README.md"] + sorted(os.path.relpath(path, ROOT) for path in
                               glob.glob(os.path.join(ROOT, "docs", "*.md"))) + ["bench/README.md"]
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def sh_blocks(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as file:
        return SH_BLOCK.findall(file.read())


def test_the_readme_has_a_session_to_run():
    assert any("$C -X PUT" in block for block in sh_blocks("README.md"))
    for page in PAGES[1:]:
        assert os.path.exists(os.path.join(ROOT, page)), page


@pytest.mark.parametrize("page", PAGES)
def test_every_sh_block_runs_as_written(api, tmp_path, page):
    blocks = sh_blocks(page)
    if not blocks:
        return  # a page of text blocks only: nothing here runs on a make-run site
    (tmp_path / "var").mkdir()
    os.symlink(os.path.dirname(api.ca), str(tmp_path / "var" / "pki"))
    script = "set -eu\n" + "\n".join(blocks).replace("https://127.0.0.1:8443", api.base)
    result = subprocess.run(["bash", "-c", script], cwd=str(tmp_path), capture_output=True,
                            text=True, timeout=300, env={"PATH": os.environ["PATH"]})
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    if page == "README.md":
        # The session's refused config says why, and the rest of it still ran.
        assert "lua-load loads code" in result.stdout and "\n409\n" in result.stdout
        assert '"type": "HTTPS"' in result.stdout  # the listener view of the instance made
