"""Tiny jobs for the run-launcher tests (importable by a forked run worker)."""

import os
import time

import dagster as dg


@dg.op
def write_pid(context: dg.OpExecutionContext) -> None:
    with open(os.environ["LAUNCHER_TEST_OUT"], "a") as f:
        f.write(f"{os.getpid()}\n")


@dg.op
def sleep_long(context: dg.OpExecutionContext) -> None:
    with open(os.environ["LAUNCHER_TEST_OUT"], "a") as f:
        f.write(f"{os.getpid()}\n")
    for _ in range(600):
        time.sleep(0.1)


@dg.job(executor_def=dg.in_process_executor)
def pid_job():
    write_pid()


@dg.job(executor_def=dg.in_process_executor)
def sleepy_job():
    sleep_long()
