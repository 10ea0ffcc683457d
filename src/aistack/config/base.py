"""What every part of the config's schema is: a strict struct (unknown keys are errors,
fields by keyword)."""

from __future__ import annotations

import msgspec


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass
