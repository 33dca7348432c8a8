# The original design's worked example as a shell script (test_sh_helper.py); POSIX sh.
set -eu
. "$1"
states="AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ
NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR VI GU AS MP"
n=0
for s in $states; do n=$((n + 1)); done
track_init "DAILY_01_BDC_Locations.sh" $((n * 2))
genter "processing state location data"
i=0
for s in $states; do
    i=$((i + 1))
    genter "loading file for state '$s'"
    gexit
    genter "writing data to database"
    track_task_progress "$i" "$n" "Writing $s: $i rows, 100% sure"
    gexit
done
gmessage "all states: done, really"
track_finish "Successfully processed $n states"
echo done
