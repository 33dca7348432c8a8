# pipetrack.sh - report a shell script's progress to `pipetrack run`.
#
# Source it from bash or any POSIX sh (dash, busybox sh):
#     . "$(pipetrack sh-helper)"
#     track_init DAILY_02_Load.sh 3          # name, total subtasks, [stage]
#     genter "loading files"
#     for f in *.csv; do i=$((i+1)); load "$f"; track_task_progress "$i" "$n" "loaded $f"; done
#     gexit
#     track_finish "all loaded"
#
# Inside `pipetrack run` each function prints one ::pipetrack:: protocol line to stdout, which
# the wrapper consumes (see docs/protocol.md); outside it every function does nothing, so the
# script runs unchanged without pipetrack. The functions never fail the script: they always
# return 0. Output captured by $(...) is not seen by the wrapper; use `pipetrack message` there.
#
# Functions (the original design's names; optional arguments may be given as ""):
#     track_init NAME [TOTAL_SUBTASKS] [STAGE]
#     track_status key=value...   keys: status current_subtask subtask_name subtask_status
#                                 overall_percent overall_message subtask_percent
#                                 subtask_message subtask_items_total subtask_items_complete
#     track_task_progress ITEMS_COMPLETE [ITEMS_TOTAL] [MESSAGE]
#     track_finish [MESSAGE]
#     track_error MESSAGE [DETAIL]
#     genter MESSAGE [ITEMS_TOTAL]
#     gexit [FAILED]
#     gmessage MESSAGE
#     track_count NAME [N]        add N (default 1) to a work count of the current subtask/run

_pipetrack_active() {
    [ -n "${PIPETRACK_CONTROL:-}" ] && [ -n "${PIPETRACK_RUN_ID:-}" ]
}

# Percent-escape for the protocol: % CR LF always, and : , in property values ($2 = value).
# The common case (nothing to escape) forks nothing.
_pipetrack_escape() {
    case $1 in
        *%* | *:* | *,* | *'
'* | *"$(printf '\r')"*) ;;
        *)
            printf '%s' "$1"
            return 0
            ;;
    esac
    printf '%s' "$1" | awk -v value="${2:-}" 'BEGIN { ORS = "" }
        {
            gsub(/%/, "%25"); gsub(/\r/, "%0D")
            if (value != "") { gsub(/:/, "%3A"); gsub(/,/, "%2C") }
            if (NR > 1) printf "%%0A"
            printf "%s", $0
        }'
}

# _pipetrack_emit COMMAND PROPS [TEXT]: one protocol line; TEXT is escaped here, PROPS must be.
_pipetrack_emit() {
    if [ $# -ge 3 ]; then
        printf '::pipetrack::%s%s::%s\n' "$1" "${2:+ $2}" "$(_pipetrack_escape "$3")"
    else
        printf '::pipetrack::%s%s\n' "$1" "${2:+ $2}"
    fi
}

# _pipetrack_prop KEY VALUE: "KEY=VALUE" escaped, or nothing when VALUE is empty.
_pipetrack_prop() {
    [ -n "$2" ] && printf '%s=%s' "$1" "$(_pipetrack_escape "$2" value)"
    return 0
}

_pipetrack_props() {
    _pipetrack_out=""
    while [ $# -ge 2 ]; do
        _pipetrack_one=$(_pipetrack_prop "$1" "$2")
        if [ -n "$_pipetrack_one" ]; then
            _pipetrack_out="${_pipetrack_out:+$_pipetrack_out,}$_pipetrack_one"
        fi
        shift 2
    done
    printf '%s' "$_pipetrack_out"
}

track_init() {
    _pipetrack_active || return 0
    _pipetrack_emit init "$(_pipetrack_props subtasks "${2:-}" stage "${3:-}")" "${1:-}"
    return 0
}

genter() {
    _pipetrack_active || return 0
    [ -n "${1:-}" ] || return 0
    _pipetrack_emit enter "$(_pipetrack_props items "${2:-}")" "$1"
    return 0
}

gexit() {
    _pipetrack_active || return 0
    if [ "${1:-}" = FAILED ]; then
        _pipetrack_emit exit "status=FAILED"
    else
        _pipetrack_emit exit ""
    fi
    return 0
}

gmessage() {
    _pipetrack_active || return 0
    _pipetrack_emit message "" "${1:-}"
    return 0
}

track_task_progress() {
    _pipetrack_active || return 0
    case ${1:-x} in *[!0-9]*) return 0 ;; esac
    if [ -n "${3:-}" ]; then
        _pipetrack_emit progress "$(_pipetrack_props done "$1" total "${2:-}")" "$3"
    else
        _pipetrack_emit progress "$(_pipetrack_props done "$1" total "${2:-}")"
    fi
    return 0
}

track_count() {
    _pipetrack_active || return 0
    _pt_n=${2:-1}
    if [ -z "${1:-}" ]; then
        echo "pipetrack: track_count needs a name; nothing counted" >&2
        return 0
    fi
    case $_pt_n in
        *[!0-9]*)
            echo "pipetrack: track_count $1: N must be a whole number >= 0, not '$_pt_n'; nothing counted" >&2
            return 0
            ;;
    esac
    if [ "${#_pt_n}" -gt 19 ]; then
        echo "pipetrack: track_count $1: N has ${#_pt_n} digits, more than a count holds; nothing counted" >&2
        return 0
    fi
    _pipetrack_emit count "$(_pipetrack_props n "$_pt_n")" "$1"
    return 0
}

track_finish() {
    _pipetrack_active || return 0
    if [ -n "${1:-}" ]; then _pipetrack_emit finish "" "$1"; else _pipetrack_emit finish ""; fi
    return 0
}

track_error() {
    _pipetrack_active || return 0
    _pipetrack_emit error "$(_pipetrack_props detail "${2:-}")" "${1:-error}"
    return 0
}

track_status() {
    _pipetrack_active || return 0
    _pt_status=RUNNING _pt_name="" _pt_sstatus="" _pt_opct="" _pt_omsg="" _pt_spct=""
    _pt_smsg="" _pt_total="" _pt_done=""
    for _pt_arg in "$@"; do
        case $_pt_arg in
            status=*) _pt_status=${_pt_arg#*=} ;;
            subtask_name=*) _pt_name=${_pt_arg#*=} ;;
            subtask_status=*) _pt_sstatus=${_pt_arg#*=} ;;
            overall_percent=*) _pt_opct=${_pt_arg#*=} ;;
            overall_message=*) _pt_omsg=${_pt_arg#*=} ;;
            subtask_percent=*) _pt_spct=${_pt_arg#*=} ;;
            subtask_message=*) _pt_smsg=${_pt_arg#*=} ;;
            subtask_items_total=*) _pt_total=${_pt_arg#*=} ;;
            subtask_items_complete=*) _pt_done=${_pt_arg#*=} ;;
            *) ;; # current_subtask and unknown keys: the wrapper derives the subtask number
        esac
    done
    case $_pt_sstatus in
        "" | RUNNING) [ -n "$_pt_name" ] && genter "$_pt_name" "$_pt_total" ;;
        COMPLETED) gexit ;;
        FAILED) gexit FAILED ;;
        *) ;;
    esac
    if [ -n "$_pt_done" ]; then
        track_task_progress "$_pt_done" "$_pt_total"
    fi
    if [ -n "$_pt_spct" ]; then
        _pipetrack_emit percent "$(_pipetrack_props value "$_pt_spct" scope subtask)"
    fi
    [ -n "$_pt_smsg" ] && _pipetrack_emit message "" "$_pt_smsg"
    if [ -n "$_pt_opct" ]; then
        _pipetrack_emit percent "$(_pipetrack_props value "$_pt_opct" scope overall)"
    fi
    [ -n "$_pt_omsg" ] && _pipetrack_emit message "scope=overall" "$_pt_omsg"
    case $_pt_status in
        FINISHED) track_finish ;;
        FAILED) track_error "${_pt_omsg:-failed}" ;;
        *) ;;
    esac
    return 0
}
