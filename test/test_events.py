import pytest

from cde_ros.data.events import EventParseError, EventPhase, parse_event


def test_full_event():
    ev = parse_event('{"phase": "start", "event_id": "ev-0007", "stamp": {"sec": 12, "nanosec": 500000000}, '
                     '"action": "open"}')
    assert ev == EventPhase("start", "ev-0007", 12_500_000_000, "open")
    assert parse_event(ev.to_json()) == ev


def test_shorthand_and_optional_fields():
    assert parse_event("start") == EventPhase("start")
    assert parse_event(" end\n") == EventPhase("end")
    assert parse_event('{"phase": "end"}') == EventPhase("end", None, None, None)


@pytest.mark.parametrize("text, words", [
    ("", "neither"),
    ("{not json", "neither"),
    ("[1, 2]", "must be an object"),
    ('{"phase": "middle"}', "phase"),
    ('{"phase": "start", "stamp": {"sec": -1}}', "out of range"),
    ('{"phase": "start", "stamp": {"nanosec": 5}}', "sec"),
    ('{"phase": "start", "stamp": {"sec": 1.5, "nanosec": 0}}', "integers"),
    ('{"phase": "start", "action": 3}', "action"),
    ('{"phase": "start", "event_id": [1]}', "event_id"),
])
def test_malformed_events_say_why(text, words):
    with pytest.raises(EventParseError, match=words):
        parse_event(text)


def test_deeply_nested_json_is_a_parse_error_not_a_crash():
    with pytest.raises(EventParseError, match="nested too deeply"):
        parse_event("[" * 5000)
    with pytest.raises(EventParseError, match="nested too deeply"):
        parse_event('{"phase": "start", "x": ' + "[" * 3000 + "]" * 3000 + "}")


def test_an_event_may_carry_the_target_region():
    ev = parse_event('{"phase": "start", "event_id": "a", "roi": [10, 20.4, 30, 40]}')
    assert ev.roi == (10, 20, 30, 40) and parse_event(ev.to_json()) == ev
    for bad in ('[1, 2, 3]', '[1, 2, 0, 4]', '[-1, 2, 3, 4]', '"box"', '[1, 2, true, 4]', '[NaN, 0, 1, 1]',
                '[0, 0, Infinity, 1]', '[0, 0, 1e300, 1]', '[0, 0, "1", 1]', '{"x": 1}', '[[0], 0, 1, 1]'):
        with pytest.raises(EventParseError, match="roi must be"):
            parse_event('{"phase": "start", "roi": %s}' % bad)
