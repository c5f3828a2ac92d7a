import pytest

from larsbench.core.environment import detect, first_host, port_for_job, tasks_on_this_node


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
