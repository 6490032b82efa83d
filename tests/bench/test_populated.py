"""The pure parts of scenarios 11 (populated server) and 12 (SBRC /sync profile):
the plans at full and QUICK sizes, the traffic's delivery accounting, the report rows.

One test (marked ``bench``) runs both scenarios against Ranvier at tiny sizes,
as tests/bench/test_harness_smoke.py does for the others; the rest need no server.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson
import pytest

from bench.populated import (
    POPULATED,
    SBRC,
    SBRC_PROFILES,
    STATE_EVENTS_PER_ROOM,
    apportion,
    message_sender,
    plan_populated,
    plan_sbrc,
    sbrc_figures,
    sync_filter,
    traffic_result,
)
from bench.report import Results, ScenarioResult, render_table
from bench.run import ALL_SCENARIOS, Options, Runner, parse_args
from bench.scenarios import FULL, QUICK, Outcome, Sizes


def test_apportion_sums_to_the_total_in_proportion() -> None:
    # 2.5, 2.5, 5: the one left over goes to the first of the largest remainders.
    assert apportion(10, [1.0, 1.0, 2.0]) == [3, 2, 5]
    counts = apportion(1001, [1.0, 2.0, 3.0, 4.0])
    assert sum(counts) == 1001
    assert counts == sorted(counts)
    assert counts[3] in (400, 401)
    assert apportion(0, [1.0, 2.0]) == [0, 0]
    assert apportion(5, []) == []


@pytest.mark.parametrize("sizes", [FULL, QUICK], ids=["full", "quick"])
def test_populated_plan_has_the_sizes(sizes: Sizes) -> None:
    plan = plan_populated(sizes)
    assert plan.users == sizes.pop_users
    assert len(plan.rooms) == sizes.pop_rooms
    # Every loaded event is counted: room state, joins and messages make pop_events exactly.
    assert plan.events == sizes.pop_events
    assert plan.events == len(plan.rooms) * STATE_EVENTS_PER_ROOM + plan.joins + plan.messages
    assert plan.messages > plan.joins
    for room in plan.rooms:
        assert room.creator not in room.members
        assert len(set(room.members)) == len(room.members)
        assert all(0 <= u < plan.users for u in room.everyone)
    large = plan.rooms[: sizes.pop_large_rooms]
    assert [len(room.everyone) for room in large] == [sizes.pop_large_room_members] * len(large)
    small = plan.rooms[sizes.pop_large_rooms :]
    assert max(len(room.everyone) for room in small) < sizes.pop_large_room_members
    # Most rooms are small; the large ones carry more messages each.
    assert min(room.messages for room in large) > max(room.messages for room in small)
    assert plan.rooms_of(plan.big_user) == list(range(sizes.pop_big_user_rooms))


def test_populated_plan_roles_and_traffic_rooms() -> None:
    sizes = FULL
    plan = plan_populated(sizes)
    assert len(plan.senders) == len(plan.traffic_rooms) == sizes.pop_senders
    assert len(plan.pollers) == sizes.pop_pollers
    assert len(plan.probers) == sizes.pop_probers
    roles = {plan.big_user, *plan.senders, *plan.pollers, *plan.probers}
    assert len(roles) == 1 + sizes.pop_senders + sizes.pop_pollers + sizes.pop_probers
    assert plan.traffic_rooms == tuple(range(sizes.pop_rooms - sizes.pop_senders, sizes.pop_rooms))
    traffic_members = [set(plan.rooms[r].everyone) for r in plan.traffic_rooms]
    for sender, r in zip(plan.senders, plan.traffic_rooms, strict=True):
        assert plan.rooms[r].creator == sender
    for listener in (*plan.pollers, *plan.probers):
        assert sum(listener in members for members in traffic_members) == 1
    # 200 pollers over 10 rooms: 20 each.
    assert [len(members & set(plan.pollers)) for members in traffic_members] == [20] * 10


def test_populated_plan_is_the_same_every_time() -> None:
    assert plan_populated(QUICK) == plan_populated(QUICK)
    assert plan_populated(QUICK, seed=1) != plan_populated(QUICK)


@pytest.mark.parametrize(
    "change",
    [
        {"pop_events": 100},  # below the state events
        {"pop_users": 20},  # fewer than the roles and the large room
        {"pop_senders": 0},
        {"pop_pollers": 2},  # fewer pollers than senders
        {"pop_rooms": 3},  # no room for big user rooms beside the traffic rooms
        {"pop_big_user_rooms": 14},  # would take in traffic rooms
    ],
)
def test_populated_plan_refuses_sizes_it_cannot_hold(change: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        plan_populated(replace(QUICK, **change))


@pytest.mark.parametrize("sizes", [FULL, QUICK], ids=["full", "quick"])
def test_sbrc_plan_puts_everyone_in_every_room(sizes: Sizes) -> None:
    plan = plan_sbrc(sizes)
    assert len(plan.rooms) == sizes.sbrc_rooms
    everyone = set(range(sizes.sbrc_users))
    for room in plan.rooms:
        assert set(room.everyone) == everyone
        assert len(room.everyone) == sizes.sbrc_users
        assert room.messages == sizes.sbrc_messages_per_room
    assert plan.joins == sizes.sbrc_rooms * (sizes.sbrc_users - 1)
    assert plan.syncing == tuple(range(sizes.sbrc_syncing_users))
    with pytest.raises(ValueError):
        plan_sbrc(replace(sizes, sbrc_syncing_users=sizes.sbrc_users + 1))


def test_message_senders_vary_within_a_timeline() -> None:
    room = plan_sbrc(FULL).rooms[3]
    last_twenty = {message_sender(room, n) for n in range(5, 25)}
    assert len(last_twenty) == 20  # a lazy-loaded timeline of 20 names 20 members
    assert all(message_sender(room, n) in room.everyone for n in range(300))


def test_sync_filter_is_an_inline_filter() -> None:
    assert orjson.loads(sync_filter(5, lazy_members=True)) == {
        "room": {"timeline": {"limit": 5}, "state": {"lazy_load_members": True}}
    }
    assert sync_filter(10, lazy_members=False).startswith("{")


def test_traffic_counts_only_acknowledged_sends() -> None:
    plan = plan_populated(QUICK)  # 3 senders, 12 pollers: 4 pollers per traffic room
    first, second = plan.senders[0], plan.senders[1]
    sent_at = {f"traffic {first} 0 aa": 10.0, f"traffic {second} 0 bb": 11.0,
               f"traffic {first} 1 cc": 12.0}  # fmt: skip
    acknowledged = {f"traffic {first} 0 aa", f"traffic {second} 0 bb"}  # the last was cut short
    arrivals = {
        f"traffic {first} 0 aa": [10.010, 10.020, 10.030, 10.040],
        f"traffic {second} 0 bb": [11.100, 11.300],
        f"traffic {first} 1 cc": [12.5],
    }
    result = traffic_result(plan, sent_at, acknowledged, arrivals, [1.0, 2.0])
    assert result.fanout_ms == pytest.approx([10, 20, 30, 40, 100, 300])
    assert (result.sent, result.deliveries, result.expected_deliveries) == (2, 6, 8)
    assert result.incremental_ms == [1.0, 2.0]


def test_sbrc_figures_one_pair_per_profile() -> None:
    samples = {label: [float(i), float(i + 10), float(i + 20)] for i, (label, _, _)
               in enumerate(SBRC_PROFILES)}  # fmt: skip
    figures = sbrc_figures(20, 100, samples)
    assert list(figures) == [
        "a) timeline 1, lazy members: 20 at once, 100 rooms each, p50 (ms)",
        "a) timeline 1, lazy members: slowest (ms)",
        "b) timeline 5, lazy members: 20 at once, 100 rooms each, p50 (ms)",
        "b) timeline 5, lazy members: slowest (ms)",
        "c) timeline 20, lazy members: 20 at once, 100 rooms each, p50 (ms)",
        "c) timeline 20, lazy members: slowest (ms)",
        "d) timeline 10, full member state: 20 at once, 100 rooms each, p50 (ms)",
        "d) timeline 10, full member state: slowest (ms)",
    ]
    assert figures["c) timeline 20, lazy members: 20 at once, 100 rooms each, p50 (ms)"] == 12.0
    assert figures["d) timeline 10, full member state: slowest (ms)"] == 23.0


def test_both_scenarios_are_selectable_and_in_the_default_run() -> None:
    assert ALL_SCENARIOS[-2:] == ("populated", "sbrc")
    assert parse_args([]).scenarios == ALL_SCENARIOS
    options = parse_args(["--quick", "--scenarios", "populated,sbrc"])
    assert options.scenarios == ("populated", "sbrc")
    assert options.sizes.pop_users == QUICK.pop_users
    assert parse_args(["--set", "pop_events=20000"]).sizes.pop_events == 20000


def test_report_rows_with_ratios() -> None:
    figure = "d) timeline 10, full member state: slowest (ms)"
    results = Results(machine={}, servers={"Ranvier": {}, "Synapse": {}}, sizes={})
    results.scenarios[SBRC.title] = {
        "Ranvier": ScenarioResult(outcomes=[Outcome({figure: 30.0})]),
        "Synapse": ScenarioResult(outcomes=[Outcome({figure: 600.0})]),
    }
    results.scenarios[POPULATED.title] = {
        "Ranvier": ScenarioResult(outcomes=[Outcome({"database size (MiB)": 50.0})]),
        "Synapse": ScenarioResult(status="error", detail="setup took over 3600 s"),
    }
    table = render_table(results).splitlines()
    assert any(
        "15 SBRC /sync profile" in line and figure in line and "| 0.05" in line for line in table
    )
    assert any("database size (MiB)" in line and "| error" in line for line in table)
    assert "- 14 populated server, Synapse: error: setup took over 3600 s" in table


TINY = replace(
    QUICK,
    pop_users=24,
    pop_rooms=8,
    pop_large_rooms=1,
    pop_large_room_members=12,
    pop_small_room_members=3,
    pop_events=200,
    pop_big_user_rooms=4,
    pop_pollers=4,
    pop_senders=2,
    pop_probers=2,
    pop_traffic_s=1.5,
    sbrc_users=6,
    sbrc_rooms=4,
    sbrc_messages_per_room=3,
    sbrc_syncing_users=3,
)


@pytest.mark.bench
async def test_both_scenarios_run_against_ranvier(tmp_path: Path) -> None:
    """The harness end to end on one Ranvier per scenario, tiny sizes; no timing assertions."""
    options = Options(
        sizes=TINY,
        quick=True,
        servers=("Ranvier",),
        scenarios=("populated", "sbrc"),
        work_dir=tmp_path / "work",
        results_dir=None,
        log=False,
    )
    async with aiohttp.ClientSession() as session:
        runner = Runner(options, session)
        results = await runner.run()
        assert runner.running == []  # both fresh servers were stopped

    assert list(results.scenarios) == [POPULATED.title, SBRC.title]
    populated = results.scenarios[POPULATED.title]["Ranvier"]
    assert (populated.status, populated.detail) == ("ok", "")
    figures = populated.figures()
    plan = plan_populated(TINY)
    assert figures["loaded: users / rooms / events"] == (
        f"24 / 8 / 200 ({plan.joins} joins, {plan.messages} messages)"
    )
    assert figures["load: password hashing"] == "argon2id t=1 m=64KiB"
    seen, _, rest = str(figures["traffic: deliveries seen / expected"]).partition(" / ")
    assert int(seen) == int(rest.split()[0]) > 0  # every poller saw every acknowledged message
    for name in (
        "traffic: send → 4 pollers' /sync p50 (ms)",
        "traffic: incremental /sync p50 (ms)",
        "RSS at the end of the traffic (MiB)",
        "initial /sync, 4 rooms (s)",
        "initial /sync, 4 rooms, lazy members (s)",
        "database size (MiB)",
        "restart: process start → first /versions (s)",
        "restart: then the big user's initial /sync, lazy, timeline 1 (s)",
    ):
        value = figures[name]
        assert isinstance(value, float) and value > 0, name
    sbrc = results.scenarios[SBRC.title]["Ranvier"]
    assert (sbrc.status, sbrc.detail) == ("ok", "")
    sbrc_values = sbrc.figures()
    assert sbrc_values["loaded: users / rooms / joins"] == "6 / 4 / 20"
    timings = {k: v for k, v in sbrc_values.items() if k.endswith("(ms)")}
    assert len(timings) == 2 * len(SBRC_PROFILES)
    assert all(isinstance(v, float) and v > 0 for v in timings.values())
    assert "| 15 SBRC /sync profile" in render_table(results)
