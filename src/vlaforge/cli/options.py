"""Option help shared by several commands."""

from __future__ import annotations

BF16_HELP = ("inference under bf16 autocast: auto (only where this CPU runs bf16 natively and faster), "
             "true or false")
