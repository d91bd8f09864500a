"""Reading TOML files with one-line errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

from optics.errors import ConfigError

__all__ = ["read_toml"]


def read_toml(path: Path, what: str) -> dict:
    """Parse the TOML file ``path`` (its existence is the caller's to check, with its own hint).

    Args:
        path: the file.
        what: what the file is, for the message (``"fit config"``, ``"system file"``, …).

    Raises:
        ConfigError: the file is not valid UTF-8 TOML, or cannot be read.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (at byte {err.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: not valid TOML ({first}); fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read (arrays or tables inside each other); flatten "
                          "it") from None
    except ValueError as err:  # an integer too long for Python to convert (over 4300 digits)
        raise ConfigError(f"{path}: holds a number too long to read ({str(err).splitlines()[0][:80]}); "
                          "fix it") from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read ({err.strerror}); check its permissions") from None
