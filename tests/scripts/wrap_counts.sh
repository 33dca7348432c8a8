#!/bin/sh
# Child for `pipetrack run` tests: work counts from every source a wrapped run has, in one run.
#   $1 the sh helper, $2 the pipetrack command, $3 Rscript, $4 the R helper, $5 python
# Inside the subtask only sources that write to stdout (ordered in one pipe); the side channel
# (`pipetrack count`, a datagram) only after the subtask's exit line.
set -eu
. "$1"
pt="$2"
genter "load"
track_count rows 5
printf '::pipetrack::count n=11::rows\n'
"$3" -e "source('$4'); track_count('rows', 13); track_count('files')"
"$5" -c 'print("::pipetrack::count n=17::rows", flush=True)'
# Refused, each with a warning on stderr, and the script goes on:
track_count rows -1
track_count rows 2.5
track_count rows 1000000000000000000000000000000
track_count ""
"$3" -e "source('$4'); track_count('rows', NaN); track_count('rows', -1); track_count('rows', 2.5); track_count('rows', 1e30); track_count('rows', c(1, 2)); track_count('rows', '5'); track_count('rows', TRUE); track_count(strrep('x', 10000), 1); track_count(NA_character_, 1)"
gexit
track_count rows 100
$pt count rows 7
$pt count files 4
$pt count rows -3 || true
$pt count rows 99999999999999999999999 || true
echo done
