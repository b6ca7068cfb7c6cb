"""What a run measured, as typed objects (scenario.py fills them).

Every figure defaults to None: not measured in this run (e.g. a run whose
guest never ran again has no writer's figures).  Times are host times,
time.monotonic() in seconds, comparable with the stream's.

t, the host times of a run's events by name:
    boot_start, booted         the source started booting, its agent answered
    migrate                    the migrate command was sent
    completed                  the source's MIGRATION "completed" event
    switched                   post_migrate() done (the host side switched)
    source_stopped             the source's STOP event
    target_running             the target's RESUME event (cpr-transfer: first
                               seen running)
    source_gone                the source has quit
    stream_stopped             run(): the stream stopped
    attempt, ended,            run_fault(): before pre_migrate, the source's
    survivor_running,          final MIGRATION event, the survivor seen
    source_running             running (the source's too if it survived)
"""
from dataclasses import asdict, dataclass, field, fields
from typing import Optional


@dataclass
class StreamFigures:
    """What the 1 kHz UDP stream into the guest saw (stream_figures())."""
    sent: Optional[int] = None         # datagrams sent
    received: Optional[int] = None     # datagrams whose reply came back
    lost: Optional[int] = None         # sent - received
    gap_ms: Optional[float] = None     # longest gap between two replies, ms
    gap_at: Optional[float] = None     # host time of the reply that began it
    # Replies the host's own socket dropped (stream.py), counted in lost too
    host_drops: Optional[int] = None
    # (seq, send time, reply time or None) per datagram, for plots and loss checks
    arrivals: Optional[list] = None


@dataclass
class Figures(StreamFigures):
    """What the guest saw across a local upgrade (or an attempt at one): the
    stream's figures, the writer's (stop_writer()) and what every run
    records; RunResult and FaultResult add their own."""
    scenario: str = ""                 # the scenario's name (run_fault: with point and fault)
    t: dict = field(default_factory=dict)  # host times of the run's events, s (see above)
    links_before: Optional[dict] = None  # the namespace's interfaces before: name -> ifindex
    links_after: Optional[dict] = None   # the same once the upgrade (or the fault) is over
    # The target's tap fds, the interface of each (run: once the source is
    # gone; run_fault: when the fault struck)
    target_tap_fds: Optional[list] = None
    source_exit: Optional[int] = None  # the source's exit status (0 clean, -9 SIGKILL, see Vm.quit)
    writes_after: Optional[int] = None  # writes the guest completed on /dev/vda at the end
    guest_alive_after: Optional[bool] = None  # the guest agent answered at the end
    vhost_user_connections: Optional[int] = None  # vhost-user connections the backend saw
    # The guest's writer (stop_writer()) and the host's check of the image:
    writer: Optional[dict] = None      # its final status line, key -> value (str)
    writer_stuck: Optional[bool] = None  # it did not reach its final state
    records: Optional[int] = None      # 4 KiB records it submitted
    io_lost: Optional[int] = None      # writes it submitted that never completed
    io_errors: Optional[int] = None    # writes that completed with an error
    io_stall_ms: Optional[float] = None  # longest gap between two completions, ms (guest clock)
    io_stalls: Optional[list] = None   # every gap over 20 ms: (at ms since it started, ms)
    lost_seqs: Optional[list] = None   # the records whose write never completed (first 1000)
    records_verified: Optional[int] = None  # records that read back intact from the image
    bad_records: Optional[list] = None  # the others (first 20)
    bytes_verified: Optional[int] = None  # records_verified * 4096, bytes

    def set_stream(self, s):
        """Take the stream's figures s (a StreamFigures)."""
        for f in fields(StreamFigures):
            setattr(self, f.name, getattr(s, f.name))

    def to_dict(self):
        """Every field, for JSON (nested dicts and lists copied)."""
        return asdict(self)


@dataclass
class RunResult(Figures):
    """A local upgrade: run(), or upgrade() alone (which fills migration,
    downtime_ms, target_status, source_exit and its times)."""
    multi_queue: Optional[bool] = None  # the tap has more than one queue
    source_tap_fds: Optional[list] = None  # the source's tap fds before the migration
    target_network: Optional[str] = None  # the target's HMP `info network`
    # The vhost-user protocol features of the disk on the target
    target_vhost_protocol: Optional[list] = None
    migration: Optional[dict] = None   # the source's query-migrate once completed
    downtime_ms: Optional[int] = None  # QEMU's downtime figure (query-migrate), ms
    target_status: Optional[str] = None  # the target's run state after the upgrade
    writes_at_switch: Optional[int] = None  # writes completed on /dev/vda once the source was gone
    records_at_switch: Optional[int] = None  # 4 KiB records written by then (sectors / 8)
    switch_ms: Optional[float] = None  # source stopped -> target running, ms
    first_reply_ms: Optional[float] = None  # target running -> its first reply to the stream, ms
    backend_panics: Optional[list] = None  # the backend's vu_panic log lines
    total_ms: Optional[int] = None     # the migration's total time (query-migrate), ms
    # run(measure=True): the guest's ticker (mfds/ticker.py), a control that
    # needs no network, and QEMU's own account of the downtime (qemutrace.py)
    tick_gap_ms: Optional[float] = None  # longest gap between two ticks the host got, ms
    first_tick_ms: Optional[float] = None  # target running -> the guest's first tick on it, ms
    ticks_lost: Optional[int] = None   # tick slots neither received nor skipped by the guest
    # first_reply_ms - first_tick_ms: what the network path adds to the
    # guest's own return (its timer ticks again), ms
    net_rest_ms: Optional[float] = None
    save_us: Optional[int] = None      # the source's saving of every section while stopped, µs
    load_us: Optional[int] = None      # the target's loading of every section, µs
    nic_save_us: Optional[int] = None  # of those, the virtio-net section's (with the tap's handover)
    nic_load_us: Optional[int] = None
    disk_save_us: Optional[int] = None  # the vhost-user-blk section's (with the session's handover)
    disk_load_us: Optional[int] = None
    # The switch in three steps, from both QEMUs' traces (qemutrace.Switchover), ms
    stop_ms: Optional[float] = None    # the source stops the VM
    stream_ms: Optional[float] = None  # the state is saved, sent and loaded
    start_ms: Optional[float] = None   # the target starts the VM
    traced_switch_ms: Optional[float] = None  # their sum
    # The backend's view (ringwatch.IoSwitch: the disk's rings in guest RAM,
    # host clock), where guest RAM is a file
    in_daemon_at_stop: Optional[int] = None  # requests inside the daemon when the source stopped
    completed_while_stopped: Optional[int] = None  # completions it pushed while no QEMU ran
    backend_stall_ms: Optional[float] = None  # longest gap between its completions, ms
    backend_stall_at_ms: Optional[float] = None  # where that gap began, ms after the source stopped
    first_request_ms: Optional[float] = None  # target running -> the guest's first new request
    first_completion_ms: Optional[float] = None  # target running -> the daemon's next completion


@dataclass
class FaultResult(Figures):
    """A handover struck by a fault (run_fault(), run_failed_target())."""
    point: str = ""                    # where the fault struck (scenario.POINTS)
    fault: str = ""                    # what struck (scenario.FAULTS)
    outcome: Optional[str] = None      # who runs the guest after: "source", "target" or "none"
    statuses: Optional[dict] = None    # "src"/"dst" -> its run state then, None if gone
    running: Optional[list] = None     # the roles whose QEMU runs the guest then
    migration_status: Optional[str] = None  # the source's final MIGRATION status
    target_fate: Optional[str] = None  # its incoming migration: "loaded", "failed" or "dead"
    target_error: Optional[str] = None  # a failed load's error-desc
    target_log: Optional[str] = None   # the target's QEMU log
    target_exit: Optional[int] = None  # the target's exit status (as source_exit)
    survivor_exit: Optional[int] = None  # the exit status of the QEMU that ran the guest
    cont_needed: Optional[bool] = None  # the source was not running when it had to go on
    source_status_after_failure: Optional[str] = None  # its run state then
    tap_txqlen: Optional[int] = None   # tap0's transmit queue, packets
    source_tap_fds_before: Optional[list] = None  # the source's tap fds before the attempt
    source_fds_before: Optional[int] = None  # the source's open fds before the attempt
    target_fds_at_start: Optional[int] = None  # the target's open fds before it loaded anything
    target_fd_kinds_at_start: Optional[list] = None  # what those fds were (harness.fd_kinds)
    target_tap_fds_at_point: Optional[list] = None  # the target's tap fds when the fault struck
    target_fd_limit: Optional[int] = None  # out-of-fds: the target's RLIMIT_NOFILE
    fds_in_stream: Optional[int] = None  # fds the proxy saw in the migration stream
    fds_forwarded_at_point: Optional[int] = None  # those it had passed on when it held the stream
    cancel_reply: Optional[dict] = None  # the source's reply to migrate_cancel
    failed_target_tap_fds: Optional[list] = None  # a failed target's tap fds once it let go
    failed_target_fds: Optional[int] = None  # its open fds then
    failed_target_status: Optional[str] = None  # its run state then
    failed_target_kept: Optional[list] = None  # the fds it holds that it did not at its start
    writes_at_recovery: Optional[int] = None  # writes completed when the survivor ran
    replies_after_recovery: Optional[int] = None  # replies that arrived after the survivor ran
    late_losses: Optional[list] = None  # datagrams sent after its first reply that got none
    early_losses: Optional[list] = None  # datagrams lost, sent before the attempt
    # lost in the outage while the tap's queue still had room
    outage_losses_before_full: Optional[list] = None
    survivor_tap_fds: Optional[list] = None  # the survivor's tap fds at the end
    survivor_network: Optional[str] = None  # the survivor's HMP `info network`
    survivor_fds: Optional[int] = None  # the survivor's open fds at the end
    source_tap_fds_after: Optional[list] = None  # the source's, when it is the survivor
    source_network: Optional[str] = None  # the same
