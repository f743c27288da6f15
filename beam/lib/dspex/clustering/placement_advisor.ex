defmodule DSPEx.Clustering.PlacementAdvisor do
  @moduledoc """
  Something `LoadBalancer.place/2` asks before its own heuristic — a later issue adds one
  that calls the Python `dspex_load_balancer`. It gets the eligible candidates (already
  filtered by the constraints) and the time budget; an answer that is not one of those
  candidates, an error, or no answer within the budget means "fall back".
  """

  @callback advise(
              agent_spec :: term(),
              constraints :: map(),
              candidates :: [map()],
              budget_ms :: non_neg_integer()
            ) ::
              {:ok, node()} | :no_advice | {:error, term()}
end
