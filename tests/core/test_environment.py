import socket

import pytest

from larsbench.core.environment import (
    INTERFACE_VARIABLES, allocation_mismatch, check_rendezvous, detect, first_host, port_for_job, tasks_on_this_node,
    use_interface,
)  # fmt: skip
from larsbench.core.errors import ConfigError


@pytest.mark.parametrize(
    ("node_list", "first"),
    [
        ("localhost", "localhost"),
        ("node1,node2", "node1"),
        ("gpu[007-010,12],cpu3", "gpu007"),
        ("gpu[12,007-010]", "gpu12"),
        ("rack1-n[3-4]", "rack1-n3"),
        ("n[1-2]-ib", "n1-ib"),
        ("a[01-02]b[3-4]", "a01b3"),
        ("cn-[0100-0163],gpu[1-2]", "cn-0100"),
    ],
)
def test_first_host(node_list, first):
    assert first_host(node_list) == first


@pytest.mark.parametrize(
    ("tasks", "node_id", "expected"),
    [("4", "0", 4), ("4(x2)", "1", 4), ("4(x2),3", "2", 3), ("2,1", "1", 1)],
)
def test_tasks_on_this_node(tasks, node_id, expected):
    env = {"SLURM_TASKS_PER_NODE": tasks, "SLURM_NODEID": node_id, "SLURM_NTASKS": "99"}
    assert tasks_on_this_node(env) == expected


def test_single_process_when_nothing_is_set():
    env = detect({})
    assert (env.source, env.rank, env.world_size) == ("single", 0, 1)


def test_torchrun_variables():
    env = detect({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                  "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234", "GROUP_RANK": "1"})  # fmt: skip
    assert (env.source, env.rank, env.world_size, env.local_rank, env.node_rank) == ("torchrun", 3, 8, 1, 1)
    assert (env.master_addr, env.master_port, env.num_nodes) == ("10.0.0.1", 1234, 4)


def test_slurm_variables():
    env = detect({
        "SLURM_JOB_ID": "123456", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
        "SLURM_NODEID": "2", "SLURM_TASKS_PER_NODE": "2(x4)", "SLURM_JOB_NODELIST": "gpu[010-013]",
        "SLURM_JOB_NUM_NODES": "4", "SLURM_ARRAY_TASK_ID": "7",
    })  # fmt: skip
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("slurm", 5, 8, 1, 2)
    assert env.master_addr == "gpu010"
    assert env.master_port == port_for_job("123456")
    assert (env.job_id, env.array_task_id, env.num_nodes) == ("123456", "7", 4)


def test_torchrun_wins_over_slurm_inside_a_job():
    env = detect({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1",
                  "SLURM_JOB_ID": "9", "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"})  # fmt: skip
    assert env.source == "torchrun" and env.job_id == "9"


def test_job_port_is_stable_and_in_range():
    assert port_for_job("42") == port_for_job("42")
    assert all(20000 <= port_for_job(str(j)) < 40000 for j in (0, 1, 19999, 20000, 123456789012))


def test_horovodrun_variables():
    env = detect({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "4", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2",
                  "HOROVOD_CROSS_RANK": "0", "HOROVOD_CROSS_SIZE": "2", "HOROVOD_GLOO_RENDEZVOUS_ADDR": "10.1.1.1",
                  "HOROVOD_GLOO_RENDEZVOUS_PORT": "4242"})  # fmt: skip
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("horovodrun", 1, 4, 1, 2)
    assert (env.master_addr, env.master_port, env.num_nodes) == ("10.1.1.1", 4242, 2)


def test_deepspeed_launcher_local_size():
    env = detect({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "5"})
    assert env.local_world_size == 2 and env.num_nodes == 2


def slurm_task(nodes: str | None, num_nodes: int, **extra: str):
    env = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": str(num_nodes), "SLURM_LOCALID": "0",
           "SLURM_JOB_NUM_NODES": str(num_nodes), **extra}  # fmt: skip
    if nodes is not None:
        env["SLURM_JOB_NODELIST"] = nodes
    return detect(env)


def hosts_table(table: dict[str, list[str]]):
    """A resolver over a fixed table (a lookup of a made-up name must not reach a real DNS server)."""

    def resolve(name, port, family, kind):
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, kind, 6, "", (address, port)) for address in table[name]]

    return resolve


def test_no_node_list_is_never_a_silent_localhost():
    env = slurm_task(None, 1)
    assert env.master_addr == "" and env.node_list is None
    with pytest.raises(ConfigError, match="no node list .* MASTER_ADDR is unset") as info:
        check_rendezvous(env, hosts_table({}))
    assert info.value.key == "rendezvous"


def test_the_first_node_must_resolve():
    with pytest.raises(ConfigError) as info:
        check_rendezvous(slurm_task("gpu[1-2]", 2), hosts_table({"gpu2": ["10.0.0.2"]}))
    assert info.value.key == "rendezvous"
    assert "'gpu1' (the first node of gpu[1-2]) does not resolve on" in info.value.message
    assert "MASTER_ADDR" in info.value.message and len(str(info.value).splitlines()) == 1
    check_rendezvous(slurm_task("gpu[1-2]", 2), hosts_table({"gpu1": ["10.0.0.1"]}))


def test_a_loopback_rendezvous_fails_on_several_nodes_only():
    resolve = hosts_table({"gpu1": ["127.0.1.1"], "h": ["::1"]})
    with pytest.raises(ConfigError, match="resolves to 127.0.1.1 .* loopback address the job's other 1 node"):
        check_rendezvous(slurm_task("gpu[1-2]", 2), resolve)
    with pytest.raises(ConfigError, match=r"'h' \(MASTER_ADDR\) resolves to ::1"):
        check_rendezvous(slurm_task("gpu[1-2]", 2, MASTER_ADDR="h"), resolve)
    check_rendezvous(slurm_task("gpu1", 1), resolve)  # one node: loopback is where its ranks meet


def test_other_launchers_have_rendezvoused_already():
    env = detect({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "nowhere", "MASTER_PORT": "1"})
    check_rendezvous(env, hosts_table({}))


@pytest.mark.parametrize(
    ("requested", "env", "problem"),
    [
        ({"nodes": 2, "ntasks_per_node": 1}, {"SLURM_JOB_NUM_NODES": "2", "SLURM_TASKS_PER_NODE": "1(x2)"}, None),
        ({"nodes": 2, "ntasks_per_node": 4}, {"SLURM_JOB_NUM_NODES": "2", "SLURM_TASKS_PER_NODE": "4,4"}, None),
        ({"nodes": 2, "ntasks_per_node": 1}, {"SLURM_JOB_NUM_NODES": "1", "SLURM_TASKS_PER_NODE": "2"},
         "asks for 2 node(s) x 1 task(s) but the job got 1 node(s) with 2 task(s) per node"),
        ({"nodes": 2, "ntasks_per_node": 2}, {"SLURM_JOB_NUM_NODES": "2", "SLURM_TASKS_PER_NODE": "3,1"},
         "but the job got 2 node(s) with 3,1 task(s) per node"),
        ({"nodes": 2, "ntasks_per_node": 1}, {}, None),  # outside an allocation: nothing to compare
        ({}, {"SLURM_JOB_NUM_NODES": "3"}, None),  # a script written before shapes were recorded
    ],
)  # fmt: skip
def test_allocation_against_the_request(requested, env, problem):
    found = allocation_mismatch(requested, env)
    if problem is None:
        assert found is None
    else:
        assert problem in found and "--ntasks-per-node" in found


def test_a_network_interface_steers_every_library_or_is_named_missing():
    environ: dict[str, str] = {}
    use_interface("lo", environ)
    assert environ == dict.fromkeys(INTERFACE_VARIABLES, "lo")
    assert set(INTERFACE_VARIABLES) == {"GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "HOROVOD_GLOO_IFACE"}
    with pytest.raises(ConfigError, match=r"has no network interface 'ib7' \(it has .*lo") as info:
        use_interface("ib7", environ)
    assert info.value.key == "network_interface"
