"""Former location of `dspex_cluster.skills.failure.lanl`, kept for importers not yet updated."""

from dspex_cluster.skills.failure.lanl import (  # noqa: F401
    DAY_S,
    LanlNodes,
    NodeDays,
    load_lanl,
    node_day_grid,
    parse_event_time,
    parse_month,
    rack_groups,
)
