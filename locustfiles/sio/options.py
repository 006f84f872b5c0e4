"""sioscale's Locust custom options: the parser entries for the table in `contract.options`.

Importing this module registers the options (Locust's init_command_line_parser event), so
any locustfile that imports `locustfiles.sio` gets them. Names, types, defaults (socket.io-client
4.x in a browser), help and web-UI visibility are the table's; this module only turns each row
into Locust's add_argument call. `contract.config.LoadConfig` maps onto them through the same table.
"""

from __future__ import annotations

import argparse
from typing import Any

from locust import events

from contract.options import OPTIONS, SioOption


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:  # parser: Locust's configargparse parser
    g = _LocustGroup(parser.add_argument_group("sioscale (Socket.IO)"))
    for o in OPTIONS:
        g.add_argument(o.flag, **parser_kwargs(o))


def parser_kwargs(o: SioOption) -> dict[str, Any]:
    """argparse's add_argument keywords for one row of the table (plus Locust's include_in_web_ui)."""
    kw: dict[str, Any] = {"default": o.cli_default, "help": o.help, "include_in_web_ui": o.web_ui}
    if o.switch:
        kw["action"] = "store_true"
    elif o.type in (int, float) or o.text_check is not None:
        kw["type"] = _arg_type(o)
    if o.choices:
        kw["choices"] = list(o.choices)
    return kw


def _arg_type(o: SioOption) -> Any:
    """The parser's `type` for a numeric option: its range checked at parse time, so an out-of-range
    value stops Locust at startup with one line (`argument --sio-sample-rate: ... between 0 and 1`)
    instead of failing every user step later. A text option with a `text_check` (--sio-scrape) is
    checked the same way and kept as its text."""
    if o.text_check is not None:
        check = o.text_check

        def check_text(text: str) -> str:
            try:
                check(text)
            except ValueError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
            return text

        return check_text
    if o.minimum is None and o.maximum is None:
        return o.type

    def parse(text: str) -> Any:
        if not isinstance(text, str):  # a default or a value set by code: already typed
            return o.check(o.type(text))
        try:
            return o.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = o.type.__name__  # argparse names the type in some of its messages
    return parse


class _LocustGroup:
    """An argument group that accepts Locust's extra add_argument keywords.

    Why: argparse groups' add_argument is the plain one and rejects `include_in_web_ui`
    (TypeError at startup); Locust's parser only handles those keywords on the parser itself.
    """

    _EXTRA = {"include_in_web_ui": True, "is_secret": False, "is_required": False, "is_multiple": False}

    def __init__(self, group) -> None:  # group: an argparse._ArgumentGroup
        self._group = group

    def add_argument(self, *args, **kwargs):  # argparse's signature
        extra = {k: kwargs.pop(k, default) for k, default in self._EXTRA.items()}
        action = self._group.add_argument(*args, **kwargs)
        for k, v in extra.items():
            setattr(action, k, v)
        return action
