#!/usr/bin/env bash
# The backend-equivalence check on a GPU machine lent for a few minutes:
# tests/backend/test_equiv_ops.c (every table entry, f32 and bf16 modes)
# and tests/model/test_equiv_model.c (the whole model, f32 mode), the cuda
# backend against the cpu backend. Results go to docs/gpu-results.md.
#
# Two halves, because the GPU machine has no network and none of the
# project's Debian libraries (HDF5, cJSON, OpenBLAS, PCRE2, Criterion, ...),
# while this machine has no GPU:
#
#   tools/gpu-check.sh --prepare [--no-cuda]      here, on the build machine
#       Configures a Release build with the CUDA backend for Hopper
#       (CMAKE_CUDA_ARCHITECTURES=90, linked with -Wl,--as-needed) in
#       build-gpu-check/, builds the two programs only, and writes the
#       bundle gpu-bundle/ (ignored by git):
#         bin/          the programs
#         lib.tar.xz    their shared libraries (the ldd closure), xz-packed:
#                       unpacked they are ~60 MiB (OpenBLAS alone is 36),
#                       more than the 64 MiB a device call may carry
#         MANIFEST      commit, date, CUDA on/off, the libraries bundled and
#                       those the GPU machine must provide
#       Not bundled: glibc's libraries (libc, libm, libdl, libpthread, librt,
#       libresolv, ld-linux; the GPU machine's glibc is newer and binaries
#       built against 2.36 run on it), the GCC runtime (libgcc_s,
#       libstdc++: present there, backward compatible), the driver (libcuda,
#       libnvidia-*) and the CUDA toolkit's libraries (libcudart, libcublas,
#       libcublasLt, libnccl, ...: whatever resolves under /usr/local/cuda
#       here), which the run looks up on the GPU machine. Prints the
#       bundle's size next to the working tree's. --no-cuda builds without
#       the CUDA backend, only to try the bundling; such a bundle refuses to
#       run. Environment: PESO_GPU_BUILD_DIR (default build-gpu-check).
#
#   tools/gpu-check.sh                            there, on the GPU machine
#       Exits 77 with "no GPU" when nvidia-smi sees none. Otherwise unpacks
#       the libraries to a temporary folder, finds the CUDA runtime and
#       cuBLAS there (the loader's cache, $CUDA_HOME, /usr/local/cuda*,
#       PyTorch's nvidia/*/lib under python3's site-packages) and puts both
#       on LD_LIBRARY_PATH, runs each program directly (CTest's files hold
#       this machine's paths) with PESO_EQUIV_REQUIRE=1, so that a backend
#       that cannot open fails instead of skipping, within a time budget
#       (PESO_GPU_CHECK_BUDGET seconds, default 360, for everything), and
#       prints the GPU, the date, the commit and, last, a Markdown table:
#       one row per entry and mode (cases, worst error, its tolerance,
#       result) and one per whole-model case. With OUT set, writes
#       $OUT/gpu-check.log (every program's full output) and
#       $OUT/gpu-check-table.md. Exits 0 when every comparison passed, 1
#       otherwise (a program that skipped there counts as failed).
#
# With the device tool: run --prepare here, then a device run with carry
# ["gpu-bundle"] and the command `bash tools/gpu-check.sh`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bundle=$root/gpu-bundle
programs=(backend_test_equiv_ops model_test_equiv_model)
# seconds each program may take at most (within the overall budget)
declare -A cap=([backend_test_equiv_ops]=150 [model_test_equiv_model]=240)
# the device call's limit on what travels, in bytes
carry_limit=$((64 * 1024 * 1024))

die() {
    echo "gpu-check: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- prepare

# "glibc", "gcc", "device" (driver or CUDA toolkit) or "bundle" for a
# library: its soname and resolved path.
lib_class() {
    local name=$1 path=$2
    case $name in
    libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.* | libresolv.so.* | \
        libutil.so.* | libanl.so.* | libnsl.so.* | ld-linux*) echo glibc ;;
    libgcc_s.so.* | libstdc++.so.*) echo gcc ;;
    libcuda.so.* | libnvidia-* | libcudart.so.* | libcublas.so.* | libcublasLt.so.* | libnccl.so.* | \
        libnvJitLink.so.* | libnvrtc.so.* | libcurand.so.* | libcusparse.so.* | libcusolver.so.* | \
        libcufft.so.* | libcupti.so.*) echo device ;;
    *)
        case $(readlink -f "$path") in
        /usr/local/cuda*) echo device ;;
        *) echo bundle ;;
        esac
        ;;
    esac
}

prepare() {
    local cuda=ON
    case ${1:-} in
    --no-cuda) cuda=OFF ;;
    "") ;;
    *) die "unknown option '$1' (expected --prepare [--no-cuda])" ;;
    esac
    local build=${PESO_GPU_BUILD_DIR:-$root/build-gpu-check}
    local gen=()
    command -v ninja >/dev/null && gen=(-G Ninja)
    # a build folder made by another generator cannot be reconfigured
    if [ -f "$build/CMakeCache.txt" ] && ! grep -q "^CMAKE_GENERATOR:INTERNAL=${gen[1]:-Unix Makefiles}\$" \
        "$build/CMakeCache.txt"; then
        rm -rf "$build"
    fi
    echo "== configure $build (CUDA $cuda, Release, sm_90, --as-needed)"
    mkdir -p "$build"
    local clog=$build/gpu-check-configure.log
    cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DPESO_CUDA=$cuda \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed >"$clog" 2>&1 ||
        {
            tail -30 "$clog"
            die "cmake configure failed (log: $clog)"
        }
    grep -q "PESO CUDA toolchain: $cuda" "$clog" ||
        die "asked for CUDA $cuda, but cmake says: $(grep 'PESO CUDA toolchain' "$clog")"
    echo "== build ${programs[*]}"
    cmake --build "$build" --target "${programs[@]}" -j "$(nproc)" ||
        die "build failed (with the CUDA backend unfinished, try --prepare --no-cuda to check the bundling alone)"

    rm -rf "$bundle"
    mkdir -p "$bundle/bin"
    local stage=$build/bundle-lib
    rm -rf "$stage"
    mkdir -p "$stage"
    local p name path cls bundled=() device=() seen=" "
    for p in "${programs[@]}"; do
        cp "$build/$p" "$bundle/bin/$p"
        strip --strip-unneeded "$bundle/bin/$p"
        local deps
        deps=$(ldd "$build/$p")
        if grep 'not found' <<<"$deps"; then
            die "$p: libraries not found here"
        fi
        while read -r name path; do
            case $seen in *" $name "*) continue ;; esac
            seen+="$name "
            cls=$(lib_class "$name" "$path")
            case $cls in
            bundle)
                cp -L "$path" "$stage/$name"
                bundled+=("$name")
                ;;
            device) device+=("$name") ;;
            esac
        done < <(awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' <<<"$deps")
    done
    tar -C "$stage" -cJf "$bundle/lib.tar.xz" .
    {
        echo "commit $(git -C "$root" rev-parse HEAD)$([ -z "$(git -C "$root" status --porcelain -- src kernels tests)" ] ||
            echo ' (with uncommitted or untracked changes in src, kernels or tests)')"
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
        echo "cuda $cuda"
        echo "programs ${programs[*]}"
        echo "bundled ${bundled[*]}"
        echo "device ${device[*]}"
    } >"$bundle/MANIFEST"

    local unpacked tree size total
    unpacked=$(du -cb "$stage"/* | tail -1 | cut -f1)
    size=$(du -sb "$bundle" | cut -f1)
    # what a device call sends besides the bundle: tracked and untracked, not ignored
    tree=$(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null |
        awk '/\ttotal$/ {s += $1} END {print s + 0}')
    total=$((size + tree))
    echo "== bundle $bundle"
    cat "$bundle/MANIFEST"
    printf '   programs %d KiB, libraries %d KiB packed (%d KiB unpacked), bundle %d KiB\n' \
        $(($(du -cb "$bundle"/bin/* | tail -1 | cut -f1) / 1024)) $(($(stat -c %s "$bundle/lib.tar.xz") / 1024)) \
        $((unpacked / 1024)) $((size / 1024))
    printf '   working tree %d KiB; bundle + tree %d KiB of the %d KiB a device call carries\n' \
        $((tree / 1024)) $((total / 1024)) $((carry_limit / 1024))
    [ "$total" -lt "$carry_limit" ] || die "bundle + working tree are over the device call's limit"
    [ "$cuda" = ON ] || echo "   (--no-cuda: this bundle has no cuda backend; it only tries the bundling, and refuses to run)"
    echo "next: a device run with carry [\"gpu-bundle\"] and the command: bash tools/gpu-check.sh"
}

# ---------------------------------------------------------------- run

# The folder holding soname on this machine ("" when the loader's cache
# has it), or nothing (status 1).
find_device_lib() {
    local so=$1 d sp
    # (awk reads all of it: grep -q would stop early, and pipefail would see ldconfig's SIGPIPE)
    if ldconfig -p 2>/dev/null | awk -v so="$so" '$1 == so {found = 1} END {exit !found}'; then
        echo ""
        return 0
    fi
    for d in ${CUDA_HOME:+"$CUDA_HOME/lib64"} ${CUDA_HOME:+"$CUDA_HOME/lib"} /usr/local/cuda/lib64 \
        /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
        /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
        [ -e "$d/$so" ] && {
            echo "$d"
            return 0
        }
    done
    if command -v python3 >/dev/null; then
        while read -r sp; do
            [ -d "$sp/nvidia" ] || continue
            d=$(find "$sp/nvidia" -maxdepth 3 -name "$so" -print -quit 2>/dev/null)
            [ -n "$d" ] && {
                dirname "$d"
                return 0
            }
        done < <(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
    fi
    return 1
}

# Markdown table from the EQUIV lines of a log: one row per (op, mode), one
# per whole-model case; the worst row is the one with the largest
# err / tolerance.
make_table() {
    echo "| op | mode | cases | max err | tolerance | result |"
    echo "|---|---|---|---|---|---|"
    awk -F'|' '
    $1 == "EQUIV" {
        key = ($2 == "model") ? "model: " $4 : $2
        k = key SUBSEP $3
        if (!(k in n)) { order[++m] = k }
        n[k]++
        r = ($8 != "PASS") ? 1e300 : ($7 + 0 > 0) ? $6 / $7 : 0
        if ($8 != "PASS") fail[k]++
        if (!(k in worst) || r > worst[k]) { worst[k] = r; err[k] = $6; tol[k] = $7 }
    }
    END {
        for (i = 1; i <= m; i++) {
            split(order[i], kk, SUBSEP)
            # sort key: entries before model cases, f32 before bf16
            printf "%d %s %d\t| %s | %s | %d | %s | %s | %s |\n", kk[1] ~ /^model: /, kk[1], kk[2] != "f32",
                kk[1], kk[2], n[order[i]], err[order[i]], tol[order[i]],
                fail[order[i]] ? "FAIL (" fail[order[i]] ")" : "PASS"
        }
    }' "$1" | LC_ALL=C sort -t "$(printf '\t')" -k1,1 | cut -f2-
}

run() {
    local smi gpus
    smi=$(command -v nvidia-smi || true)
    [ -z "$smi" ] && [ -x /usr/local/nvidia/bin/nvidia-smi ] && smi=/usr/local/nvidia/bin/nvidia-smi
    if [ -z "$smi" ]; then
        echo "no GPU: nvidia-smi is not on this machine (run this half on the GPU machine; --prepare is for here)"
        exit 77
    fi
    if ! gpus=$("$smi" -L 2>&1) || ! grep -q '^GPU ' <<<"$gpus"; then
        echo "no GPU: nvidia-smi -L lists none: ${gpus:-no output}"
        exit 77
    fi
    [ -f "$bundle/MANIFEST" ] || die "no bundle at $bundle: run tools/gpu-check.sh --prepare on the build machine and carry gpu-bundle"
    grep -q '^cuda ON$' "$bundle/MANIFEST" || die "this bundle was built without the cuda backend (--no-cuda): nothing to compare; prepare it again"

    local start=$SECONDS budget=${PESO_GPU_CHECK_BUDGET:-360}
    local work log table libdir so d dirs=""
    work=$(mktemp -d /tmp/peso-gpu-check.XXXXXX)
    log=${OUT:+$OUT/gpu-check.log}
    log=${log:-$work/gpu-check.log}
    table=${OUT:+$OUT/gpu-check-table.md}
    table=${table:-$work/gpu-check-table.md}
    : >"$log"
    libdir=$work/lib
    mkdir -p "$libdir"
    tar -C "$libdir" -xJf "$bundle/lib.tar.xz" 2>/dev/null || python3 -m tarfile -e "$bundle/lib.tar.xz" "$libdir" ||
        die "cannot unpack $bundle/lib.tar.xz (neither tar -J nor python3's tarfile)"
    local devlibs=()
    read -ra devlibs < <(sed -n 's/^device //p' "$bundle/MANIFEST")
    for so in "${devlibs[@]}"; do
        case $so in libcuda.so.* | libnvidia-*) continue ;; esac # the driver's: the loader finds them
        d=$(find_device_lib "$so") || die "$so is not on this machine (looked in the loader's cache, \$CUDA_HOME, /usr/local/cuda*, python3's site-packages/nvidia)"
        [ -n "$d" ] && case ":$dirs:" in *":$d:"*) ;; *) dirs+=${dirs:+:}$d ;; esac
    done
    export LD_LIBRARY_PATH=$libdir${dirs:+:$dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    local p missing
    for p in "${programs[@]}"; do
        missing=$(ldd "$bundle/bin/$p" | grep 'not found' || true)
        [ -z "$missing" ] || die "$p: $missing (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
    done

    local gpu_info date
    gpu_info=$("$smi" --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
    date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    {
        echo "gpu-check: $gpu_info; $date"
        cat "$bundle/MANIFEST"
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    } | tee -a "$log"

    local status=0 left t rc from summary=()
    for p in "${programs[@]}"; do
        left=$((budget - (SECONDS - start) - 10))
        t=${cap[$p]}
        [ "$left" -lt "$t" ] && t=$left
        if [ "$t" -lt 10 ]; then
            summary+=("$p: not run (time budget of ${budget}s spent)")
            status=1
            continue
        fi
        echo "== $p (at most ${t}s)" | tee -a "$log"
        from=$(($(wc -l <"$log") + 1))
        rc=0
        PESO_EQUIV_REQUIRE=1 timeout -k 5 "$t" "$bundle/bin/$p" --jobs=1 >>"$log" 2>&1 || rc=$?
        case $rc in
        0) summary+=("$p: passed") ;;
        77) summary+=("$p: SKIPPED on a GPU machine (exit 77): counted as failed") ;;
        124 | 137) summary+=("$p: TIMED OUT after ${t}s") ;;
        *) summary+=("$p: failed (exit $rc)") ;;
        esac
        grep -E '^\[====\] Synthesis' "$log" | tail -1
        if [ "$rc" -ne 0 ]; then
            status=1
            echo "-- ${summary[-1]}; the end of its output:"
            tail -n "+$from" "$log" | grep -v '^EQUIV' | tail -12
        fi
    done
    if grep -q '^EQUIV|.*|FAIL$' "$log"; then
        status=1
        echo "-- failed comparisons (first 30; all in the log):"
        grep '^EQUIV|.*|FAIL$' "$log" | head -30 | cut -c1-200
    fi

    {
        echo "### Backend equivalence, cuda against cpu"
        echo
        echo "- GPU: $gpu_info"
        echo "- date: $date"
        echo "- $(grep '^commit ' "$bundle/MANIFEST")"
        echo "- wall time: $((SECONDS - start)) s"
        for p in "${summary[@]}"; do echo "- $p"; done
        echo
        make_table "$log"
    } >"$table"
    echo
    cat "$table"
    [ -n "${OUT:-}" ] && echo "(log: $log; table: $table)"
    rm -rf "$libdir"
    exit $status
}

case ${1:-} in
--prepare)
    shift
    prepare "$@"
    ;;
"") run ;;
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*) die "unknown option '$1' (expected --prepare [--no-cuda], --help, or nothing on the GPU machine)" ;;
esac
