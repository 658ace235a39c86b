"""Property-based: whatever a client sends, the operator API answers a documented status (never a 500).

Bodies are arbitrary JSON (including NaN and huge numbers), near-valid objects with wrong-typed or
extreme fields, or arbitrary text; path segments are arbitrary text, percent-encoded. Every answer's
status must be documented for its operation and its body must match the documented schema.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.operator_helpers import ADMIN, world
from tests.unit.test_operator_openapi import conforms

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.text(max_size=30),
)
field_values = st.one_of(
    json_values, times, st.sampled_from(["", " ", "campaign", "down", "expected", "x\ny"])
)


def _near(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of the model's own fields (any values) and maybe a stranger."""
    return st.fixed_dictionaries({}, optional={name: field_values for name in fields}) | st.dictionaries(
        st.sampled_from([*fields, "who", "extra"]), field_values, max_size=5
    )


SNOOZE = ["metric", "dimension", "dimension_value", "until", "duration_minutes", "reason"]
LABEL = ["label", "note"]
EVENT = ["kind", "name", "start", "end"]
OVERRIDE = ["threshold", "bad_direction", "min_abs_change", "min_volume", "reason", "expected_version"]
# Mostly valid bodies with values near the limits: the success paths get exercised too.
words = st.from_regex(r"[A-Za-z0-9_ -]{0,8}[a-z]", fullmatch=True)
near_times = st.datetimes(
    min_value=datetime(2026, 9, 1), max_value=datetime(2027, 3, 1), timezones=offsets
).map(lambda d: d.isoformat())
valid_snoozes = st.fixed_dictionaries(
    {"reason": words},
    optional={
        "until": near_times,
        "duration_minutes": st.integers(-10, 200_000),
        "metric": words,
        "dimension_value": words,
    },
)
valid_events = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["campaign", "holiday", "maintenance"]),
        "name": words,
        "start": near_times,
        "end": near_times,
    }
)
valid_overrides = st.fixed_dictionaries(
    {},
    optional={
        "threshold": st.floats(min_value=-1, max_value=200),
        "bad_direction": st.sampled_from(["down", "up", "both"]),
        "min_volume": st.floats(min_value=-1, max_value=1e300),
        "expected_version": st.integers(-1, 3),
    },
)
raw_bodies = st.one_of(
    st.text(max_size=60), st.sampled_from(["{", "[]", "null", "1e999", '{"reason": NaN}', '""'])
)


def _send(method: str, target: str, body: Any, raw: str | None = None) -> None:
    w = world()
    answer = w.call(method, target, body, who=ADMIN, raw=raw)
    assert answer.status != 500
    conforms(method, target, answer)


@SETTINGS
@given(body=st.one_of(valid_snoozes, _near(SNOOZE), json_values))
def test_given_any_snooze_body_then_the_answer_is_documented(body: Any) -> None:
    _send("POST", "/v1/integrations/acme-ads/snoozes", body)


@SETTINGS
@given(body=st.one_of(_near(LABEL), json_values))
def test_given_any_label_body_then_the_answer_is_documented(body: Any) -> None:
    _send("PUT", f"/v1/integrations/acme-ads/alerts/ewma-{'2' * 32}/label", body)


@SETTINGS
@given(body=st.one_of(valid_events, _near(EVENT), json_values), global_=st.booleans())
def test_given_any_calendar_body_then_the_answer_is_documented(body: Any, global_: bool) -> None:
    _send("POST", "/v1/calendar" if global_ else "/v1/integrations/acme-ads/calendar", body)


@SETTINGS
@given(body=st.one_of(valid_overrides, _near(OVERRIDE), json_values), metric=st.text(min_size=1, max_size=20))
def test_given_any_override_body_and_metric_then_the_answer_is_documented(body: Any, metric: str) -> None:
    _send("PUT", f"/v1/integrations/acme-ads/overrides/{quote(metric, safe='')}", body)


@SETTINGS
@given(raw=raw_bodies)
def test_given_any_text_as_a_body_then_the_answer_is_documented(raw: str) -> None:
    _send("POST", "/v1/integrations/acme-ads/snoozes", None, raw=raw)


@SETTINGS
@given(
    integration=st.text(min_size=1, max_size=70),
    item=st.text(min_size=1, max_size=40),
    query=st.dictionaries(
        st.sampled_from(
            ["date", "limit", "before", "status", "team", "days", "include_global", "integration_id"]
        ),
        st.text(max_size=20),
        max_size=3,
    ),
)
def test_given_any_path_and_query_then_the_answer_is_documented(
    integration: str, item: str, query: dict[str, str]
) -> None:
    segment, other = quote(integration, safe=""), quote(item, safe="")
    suffix = ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())) if query else ""
    for method, target in (
        ("GET", f"/v1/integrations/{segment}/snoozes"),
        ("DELETE", f"/v1/integrations/{segment}/snoozes/{other}"),
        ("GET", f"/v1/integrations/{segment}/alerts{suffix}"),
        ("GET", f"/v1/integrations/{segment}/calendar{suffix}"),
        ("GET", f"/v1/integrations/{segment}/audit{suffix}"),
        ("DELETE", f"/v1/integrations/{segment}/overrides/{other}"),
        ("GET", f"/v1/incidents{suffix}"),
        ("POST", f"/v1/incidents/{other}/acknowledge"),
    ):
        w = world()
        answer = w.call(method, target, None, who=ADMIN)
        assert answer.status != 500
        if answer.status != 404 or "Not found" not in answer.message:  # a segment with '/' is no route
            conforms(method, target, answer)


def test_given_a_body_with_nan_when_posted_then_it_is_refused_naming_the_field() -> None:
    w = world()
    answer = w.call(
        "PUT", "/v1/integrations/acme-ads/overrides/ngr", raw=json.dumps({"threshold": float("nan")})
    )
    assert answer.status == 422
    assert ["body", "threshold"] in answer.fields()
