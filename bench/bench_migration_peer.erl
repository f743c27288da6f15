%% Helpers bench_migration.py loads into its BEAM nodes (compiled with erlc into a temp dir):
%% subscribers that timestamp every version they get, a timed series of sets, and a series of
%% migrations. Times are erlang:system_time(microsecond): one machine, one clock.
-module(bench_migration_peer).
-export([subscribers/2, summary/1, set_series/3, migrate_series/3, bare_series/3]).

-define(VAR, 'Elixir.DSPEx.Clustering.Variable').
-define(MIG, 'Elixir.DSPEx.Clustering.Migration').

%% N processes here subscribed to variable Name from its next change on.
subscribers(Name, N) ->
    Pids = [spawn(fun() -> loop(#{}) end) || _ <- lists:seq(1, N)],
    [ok = ?VAR:subscribe(Name, P, []) || P <- Pids],
    Pids.

loop(Seen) ->
    receive
        {variable, _Name, _Value, Version} ->
            loop(Seen#{Version => erlang:system_time(microsecond)});
        {dump, From} ->
            From ! {dumped, self(), Seen},
            loop(Seen)
    end.

%% #{Version => {LatestArrival, Arrivals, InOrder}} over the subscribers Pids (all on this node).
summary(Pids) ->
    Maps = [begin P ! {dump, self()}, receive {dumped, P, M} -> M after 10000 -> #{} end end
            || P <- Pids],
    lists:foldl(
      fun(M, Acc) ->
              maps:fold(fun(V, T, A) ->
                                {Max, C} = maps:get(V, A, {0, 0}),
                                A#{V => {max(Max, T), C + 1}}
                        end, Acc, M)
      end, #{}, Maps).

%% K sets of Name, IntervalMs apart: [{Version, TimeBeforeSet}].
set_series(Name, K, IntervalMs) ->
    [begin
         T = erlang:system_time(microsecond),
         {ok, V} = ?VAR:set(Name, I),
         timer:sleep(IntervalMs),
         {V, T}
     end || I <- lists:seq(1, K)].

%% K migrations of Id, each to another of Nodes than where it is:
%% [{PauseMs, WallUs, StateBytes, StepsMs}].
migrate_series(Id, Nodes, K) ->
    [begin
         Others = Nodes -- [?MIG:where(Id)],
         Target = lists:nth(1 + (I rem length(Others)), Others),
         T0 = erlang:monotonic_time(microsecond),
         {ok, #{pause_ms := P, state_bytes := B, steps_ms := S}} =
             ?MIG:migrate(Id, Target, [{grace_ms, 200}]),
         {P, erlang:monotonic_time(microsecond) - T0, B, S}
     end || I <- lists:seq(1, K)].

%% The reference: K round trips of a Size-byte random binary to Target and back by erpc (what
%% moving the bytes alone costs between these nodes): [Ms].
bare_series(Target, Size, K) ->
    Bin = crypto:strong_rand_bytes(Size),
    [begin
         T0 = erlang:monotonic_time(microsecond),
         Size = erpc:call(Target, erlang, byte_size, [Bin]),
         (erlang:monotonic_time(microsecond) - T0) / 1000
     end || _ <- lists:seq(1, K)].
