%% Compiled helpers for bench_state.py, loaded on a BEAM app node (code:add_patha), so the
%% clients run compiled code on the BEAM side: our layer (DSPEx.Clustering.State) and bare
%% ra:process_command to the leader, same machine ops, same Ra group, same node.
-module(bench_state_peer).
-export([run/5, probe/2, probe_results/1]).

-define(STATE, 'Elixir.DSPEx.Clustering.State').

%% run(Path, Op, Total, Concurrency, Leader) -> #{n, seconds, ops_per_s, p50_us, p99_us, errors}
%% Path: layer | bare; Op: put | get | cas. Each client uses keys of its own (no cas conflicts).
run(Path, Op, Total, Conc, Leader) ->
    Per = max(1, Total div Conc),
    Parent = self(),
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() ->
                Key = {bench, node(), W},
                V0 = prepare(Path, Key, Leader),
                Parent ! {done, self(), loop(Path, Op, Key, Leader, Per, V0, [], 0)}
            end) || W <- lists:seq(1, Conc)],
    Results = [receive {done, P, R} -> R end || P <- Pids],
    T1 = erlang:monotonic_time(microsecond),
    Lats = lists:sort(lists:append([L || {L, _} <- Results])),
    Errors = lists:sum([E || {_, E} <- Results]),
    N = length(Lats),
    Secs = (T1 - T0) / 1.0e6,
    #{n => N, seconds => Secs, ops_per_s => N / Secs, errors => Errors,
      p50_us => pct(Lats, 0.50), p99_us => pct(Lats, 0.99)}.

prepare(Path, Key, Leader) ->
    {ok, V} = op(Path, put, Key, 0, undefined, Leader),
    V.

loop(_Path, _Op, _Key, _Leader, 0, _V, Lats, Errors) -> {Lats, Errors};
loop(Path, Op, Key, Leader, I, V, Lats, Errors) ->
    T0 = erlang:monotonic_time(microsecond),
    R = op(Path, Op, Key, I, V, Leader),
    Lat = erlang:monotonic_time(microsecond) - T0,
    case R of
        {ok, V2} -> loop(Path, Op, Key, Leader, I - 1, V2, [Lat | Lats], Errors);
        {ok, _Value, _Version} -> loop(Path, Op, Key, Leader, I - 1, V, [Lat | Lats], Errors);
        _ -> loop(Path, Op, Key, Leader, I - 1, V, Lats, Errors + 1)
    end.

op(layer, put, Key, I, _V, _L) -> ?STATE:put(Key, I, [{consistency, strong}]);
op(layer, get, Key, _I, _V, _L) -> ?STATE:get(Key, [{consistency, strong}]);
op(layer, cas, Key, I, V, _L) -> ?STATE:cas(Key, V, I, [{consistency, strong}]);
op(bare, Op, Key, I, V, Leader) ->
    Cmd = case Op of
              put -> {put, Key, I};
              get -> {get, Key};
              cas -> {cas, Key, V, I}
          end,
    case ra:process_command(Leader, Cmd, 5000) of
        {ok, Reply, _} -> Reply;
        Other -> Other
    end.

pct([], _) -> null;
pct(Sorted, Q) -> lists:nth(max(1, min(length(Sorted), round(Q * length(Sorted)))), Sorted).

%% probe(Name, Key): a registered process that writes Key through our layer back to back and
%% keeps {InvokedAtMs, CompletedAtMs, ok | error} (os:system_time, comparable with the Python
%% side's time.time()) until it gets stop.
probe(Name, Key) ->
    Pid = spawn(fun() -> probe_loop(Key, 1, []) end),
    register(Name, Pid),
    ok.

probe_loop(Key, I, Acc) ->
    receive
        {stop, From} -> From ! {probe, lists:reverse(Acc)}
    after 0 ->
        T0 = os:system_time(millisecond),
        R = ?STATE:put(Key, I, [{consistency, strong}, {timeout, 10000}]),
        T1 = os:system_time(millisecond),
        Tag = case R of {ok, _} -> ok; _ -> error end,
        probe_loop(Key, I + 1, [{T0, T1, Tag} | Acc])
    end.

probe_results(Name) ->
    Name ! {stop, self()},
    receive {probe, L} -> L after 30000 -> timeout end.
