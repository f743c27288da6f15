defmodule DSPEx.Clustering.PatternTest do
  use ExUnit.Case, async: true
  alias DSPEx.Clustering.SignalBus.Pattern

  test "* matches exactly one segment" do
    assert Pattern.match?("cluster.node.*", "cluster.node.up")
    refute Pattern.match?("cluster.node.*", "cluster.node")
    refute Pattern.match?("cluster.node.*", "cluster.node.up.extra")
    assert Pattern.match?("cluster.*.down", "cluster.node.down")
    refute Pattern.match?("cluster.*.down", "cluster.node.up")
  end

  test "** matches any depth" do
    assert Pattern.match?("cluster.**", "cluster.node.up")
    assert Pattern.match?("cluster.**", "cluster.load.report")
    assert Pattern.match?("**", "anything.at.all")
    assert Pattern.match?("cluster.**.down", "cluster.node.down")
    assert Pattern.match?("cluster.**.down", "cluster.a.b.c.down")
    refute Pattern.match?("cluster.**", "other.node.up")
    refute Pattern.match?("cluster.**.down", "cluster.node.up")
  end

  test "exact patterns and validity" do
    assert Pattern.match?("cluster.node.up", "cluster.node.up")
    refute Pattern.match?("cluster.node.up", "cluster.node.down")
    assert Pattern.valid?("cluster.node.*") and Pattern.valid?("**")
    refute Pattern.valid?("cluster..node")
    refute Pattern.valid?("Cluster.Node")
    refute Pattern.valid?("")
    refute Pattern.valid?(:atom)
  end
end
