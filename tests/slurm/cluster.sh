# shellcheck shell=bash
# A throwaway one-node Slurm cluster in a directory, for the Slurm tests
# and for trying the job scripts by hand (as root):
#
#   source tests/slurm/cluster.sh
#   slurm_cluster_start /tmp/cluster && sbatch jobs/stage.sh
#   slurm_cluster_stop /tmp/cluster
#
# Everything (munge key and socket, slurm.conf, state, spool, logs, pid
# files) lives under the directory, on ports found free, so the machine's
# own munge or Slurm, if any, is left alone. The settings are the ones
# verified on the build machine (DESIGN.md): munge authentication,
# proctrack/linuxproc, task/none, select/cons_tres, SlurmUser=root, one
# node named by hostname with the CPUs and memory slurmd -C reports.
# Shortened timers make requeued jobs restart within seconds.

# A TCP port on 127.0.0.1 with nothing listening on it or on the next one.
slurm_cluster_free_port()
{
    local p
    for p in $(shuf -i 20000-59000 -n 50); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

slurm_cluster_conf()
{
    local d=$1 port=$2 host node
    host=$(hostname -s)
    # "NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..": the machine as slurmd sees it
    node=$(slurmd -C | head -1)
    cat <<EOF
ClusterName=peso-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may restart
AuthInfo=socket=$d/munge/munge.socket,cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# completed jobs stay visible to scontrol show job (no accounting here)
MinJobAge=3600
KillWait=10
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=peso Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# Prints a daemon's own error output: its log and what it wrote on stderr.
slurm_cluster_show_log()
{
    local d=$1 name=$2 f
    for f in "$d/log/$name.log" "$d/log/$name.err"; do
        [ -s "$f" ] && { echo "---- $f"; tail -40 "$f"; }
    done
    return 0
}

# Starts munged, slurmctld and slurmd under directory $1 and waits until
# the node is idle; exports SLURM_CONF for the client commands and the
# jobs. Returns 1, naming the daemon that failed, if one does not start.
slurm_cluster_start()
{
    local d=$1 port state=""
    mkdir -p "$d/munge" "$d/state" "$d/spool" "$d/log"
    chmod 700 "$d/munge"
    chmod 755 "$d"
    mungekey --create --keyfile="$d/munge/munge.key" 2>"$d/log/munged.err" || {
        echo "mungekey failed"
        slurm_cluster_show_log "$d" munged
        return 1
    }
    munged --force --key-file="$d/munge/munge.key" --socket="$d/munge/munge.socket" \
        --pid-file="$d/munge/munged.pid" --seed-file="$d/munge/munged.seed" \
        --log-file="$d/log/munged.log" 2>>"$d/log/munged.err" || {
        echo "munged did not start"
        slurm_cluster_show_log "$d" munged
        return 1
    }
    port=$(slurm_cluster_free_port) || { echo "no free TCP port pair"; return 1; }
    slurm_cluster_conf "$d" "$port" >"$d/slurm.conf"
    export SLURM_CONF=$d/slurm.conf
    slurmctld -f "$SLURM_CONF" 2>"$d/log/slurmctld.err" || {
        echo "slurmctld did not start"
        slurm_cluster_show_log "$d" slurmctld
        return 1
    }
    for _ in $(seq 1 40); do
        scontrol ping 2>/dev/null | grep -q UP && break
        sleep 0.5
    done
    scontrol ping 2>/dev/null | grep -q UP || {
        echo "slurmctld does not answer after 20 s"
        slurm_cluster_show_log "$d" slurmctld
        return 1
    }
    slurmd -f "$SLURM_CONF" 2>"$d/log/slurmd.err" || {
        echo "slurmd did not start"
        slurm_cluster_show_log "$d" slurmd
        return 1
    }
    for _ in $(seq 1 60); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
        [ "$state" = idle ] && return 0
        sleep 0.5
    done
    echo "the node is '${state:-not listed}' after 30 s, not idle"
    slurm_cluster_show_log "$d" slurmctld
    slurm_cluster_show_log "$d" slurmd
    return 1
}

# Stops what slurm_cluster_start started under $1: cancels the jobs and
# waits for their processes, then ends the daemons by their pid files.
slurm_cluster_stop()
{
    local d=$1 f pid
    if [ -f "$d/slurmctld.pid" ] && [ -n "${SLURM_CONF:-}" ]; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(squeue -h -t running,completing 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    for f in "$d/slurmd.pid" "$d/slurmctld.pid" "$d/munge/munged.pid"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || continue 2
            sleep 0.25
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    return 0
}
