%% Compiled helpers for bench_node.py, loaded on the BEAM peers with -pa (so the BEAM side runs
%% compiled code, not the shell's interpreter).
-module(bench_peer).
-export([send/3, start_sink/2, wait_sunk/1, calls/3, erpcs/4, echo/1, start_echo/1]).

send(Dest, N, Payload) ->
    Dest ! {start, N},
    send_loop(Dest, 1, N, Payload).

send_loop(_Dest, I, N, _Payload) when I > N -> ok;
send_loop(Dest, I, N, Payload) ->
    Dest ! {ping, I, Payload},
    send_loop(Dest, I + 1, N, Payload).

%% A registered sink: after {start, N} it counts N pings and reports
%% {sunk, N, Microseconds, SumOfI} to ReportTo, then waits for the next round.
start_sink(Name, ReportTo) ->
    Pid = spawn(fun() -> sink_wait(ReportTo) end),
    register(Name, Pid),
    ok.

sink_wait(ReportTo) ->
    receive
        {start, N} -> sink_loop(ReportTo, N, 0, 0, erlang:monotonic_time(microsecond))
    end.

sink_loop(ReportTo, N, N, Sum, T0) ->
    ReportTo ! {sunk, N, erlang:monotonic_time(microsecond) - T0, Sum},
    sink_wait(ReportTo);
sink_loop(ReportTo, N, Seen, Sum, T0) ->
    receive
        {ping, I, _} -> sink_loop(ReportTo, N, Seen + 1, Sum + I, T0)
    end.

wait_sunk(Timeout) ->
    receive
        {sunk, _, _, _} = M -> M
    after Timeout -> timeout
    end.

%% Round trips in nanoseconds.
calls(Dest, N, Warmup) ->
    [gen_server:call(Dest, I) || I <- lists:seq(1, Warmup)],
    [timed(fun() -> I = gen_server:call(Dest, I) end) || I <- lists:seq(1, N)].

erpcs(Node, M, F, N) ->
    [erpc:call(Node, M, F, [I]) || I <- lists:seq(1, 100)],
    [timed(fun() -> I = erpc:call(Node, M, F, [I]) end) || I <- lists:seq(1, N)].

timed(Fun) ->
    T0 = erlang:monotonic_time(nanosecond),
    Fun(),
    erlang:monotonic_time(nanosecond) - T0.

echo(X) -> X.

start_echo(Name) ->
    register(Name, spawn(fun echo_loop/0)),
    ok.

echo_loop() ->
    receive
        {'$gen_call', From, Req} -> gen:reply(From, Req), echo_loop()
    end.
