"""What `recon inspect` shows: a rich table and an atomically written contact sheet."""

import pytest
from rich.console import Console
from rich.table import Table

from recon.analysis.inspect import inspect_run
from recon.errors import ConfigError
from recon.reporting.inspect_views import format_table, write_contact_sheet


def test_format_table_is_a_rich_table(run):
    table = format_table(inspect_run(run), title="run")
    assert isinstance(table, Table) and table.row_count == 2
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "saturated" in text and "SNR" in text
    assert list(table.columns[0].cells) == ["a", "b"]  # one row per view, in the run's order


def test_contact_sheet_is_written_atomically(run, tmp_path):
    out = tmp_path / "sheet" / "views.png"
    write_contact_sheet(run, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_contact_sheet(run, out, frame=1, columns=1)
    assert [p.name for p in out.parent.iterdir()] == ["views.png"]  # no temporary left
    with pytest.raises(ConfigError, match="frame 5 out of range"):
        write_contact_sheet(run, tmp_path / "x.png", frame=5)
    assert not (tmp_path / "x.png").exists()
