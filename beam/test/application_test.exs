defmodule DSPEx.Clustering.ApplicationTest do
  use ExUnit.Case

  test "the application is started with its supervisor" do
    assert Process.whereis(DSPEx.Clustering.Supervisor)
  end
end
