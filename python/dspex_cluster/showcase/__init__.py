"""The main job (`make run`, `python -m dspex_cluster platform`): a whole DSPEx cluster on this
machine — three BEAM nodes and one Python agent node on a private epmd — runs a workload placed by
the learned model and by the BEAM heuristic alone, then one BEAM node degrades and is killed; the
run is shown live and written up as `report.json` and `report.html`."""

from dspex_cluster.showcase.scenario import Timeline, run_platform

__all__ = ["Timeline", "run_platform"]
