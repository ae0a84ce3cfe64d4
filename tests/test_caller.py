"""caller/: which frame a warning names (the first one that is not ours or plumbing)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import pytest

from techrevati.runtime.caller import user_site, user_stacklevel, warn_at, warn_user


def _function_in(module: str, body: str, **names: object) -> Callable[[], object]:
    """A function whose frame belongs to ``module`` (as if defined there)."""
    namespace: dict[str, object] = {"__name__": module, **names}
    exec(compile(f"def f():\n    {body}\n", f"<{module}>", "exec"), namespace)
    function = namespace["f"]
    assert callable(function)
    return function


def _warn_through(*modules: str) -> warnings.WarningMessage:
    """warn_user called from a chain of functions in ``modules`` (innermost first)."""
    inner = _function_in(modules[0], "warn_user('x', RuntimeWarning)", warn_user=warn_user)
    for module in modules[1:]:
        inner = _function_in(module, "inner()", inner=inner)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inner()
    [warning] = caught
    return warning


def test_frames_of_ours_and_of_the_plumbing_are_passed_over() -> None:
    warning = _warn_through(
        "techrevati.runtime.telemetry.limits.ledger",
        "opentelemetry.sdk.trace",
        "openai.resources.chat",
        "wrapt.wrappers",
        "contextlib",
        "my_app.agent",
    )
    assert warning.filename == "<my_app.agent>"


@pytest.mark.parametrize(
    "module", ["openai_agents_app", "techrevati.runtime_extras", "httpx_mock_app", "__main__"]
)
def test_a_package_that_only_starts_like_a_library_is_user_code(module: str) -> None:
    assert _warn_through("techrevati.runtime.permissions", module).filename == f"<{module}>"


def test_the_level_counts_our_frames() -> None:
    """Called in one of our functions called from here: 2 is this test's frame."""
    level = _function_in(
        "techrevati.runtime.x", "return user_stacklevel()", user_stacklevel=user_stacklevel
    )
    outer = _function_in("techrevati.runtime.y", "return level()", level=level)
    assert (level(), outer()) == (2, 3)


def test_called_from_user_code_directly_it_is_that_line() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        warn_user("here", UserWarning)
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)


def test_a_site_noted_now_names_its_line_in_a_warning_given_later() -> None:
    # A warning given where no user frame is on the stack (a weak reference's callback)
    # names the user's line noted earlier, past our frames and the plumbing's.
    note = _function_in("techrevati.runtime.x", "return user_site()", user_site=user_site)
    through = _function_in("openai.resources.chat", "return note()", note=note)
    site = through()
    assert site is not None and site.filename == __file__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_at(site, "late", RuntimeWarning)
    [warning] = caught
    assert (warning.filename, warning.lineno) == (__file__, site.lineno)
    assert warning.category is RuntimeWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # python -W error: raised, as warnings.warn would
        with pytest.raises(RuntimeWarning, match="late"):
            warn_at(site, "late", RuntimeWarning)


def test_texts_shown_are_kept_in_a_bounded_registry_not_the_modules() -> None:
    """A service warning once per session, each text with its own amount or id, must not
    grow its module's ``__warningregistry__`` (Python never prunes it): 2,000 texts leave
    it empty, and ours holds at most 257. The ``default`` action still shows a text once.
    """
    namespace: dict[str, object] = {"__name__": "my_service.handlers"}
    warn = _function_in(
        "techrevati.runtime.x", "warn_user(text, RuntimeWarning)", warn_user=warn_user
    )
    handler = _function_in("my_service.handlers", "warn()", warn=warn)
    handler.__globals__.update(namespace)  # (its own module globals, as a module's)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for serial in range(2000):
            warn.__globals__["text"] = f"booked at an estimate (${serial / 1e6:.6f})"
            handler()
        warn.__globals__["text"] = "the same text"
        handler()
        handler()
    assert len(caught) == 2001  # each distinct text once, the repeated one once
    assert handler.__globals__.get("__warningregistry__", {}) == {}
    from techrevati.runtime import caller

    assert len(caller._registry_for("my_service.handlers")) <= 257
