#!/bin/sh
# The fault suite's light job: a line in the node's run record when it starts and one when it ends, then the
# job's own exit status. `>>` opens the record with O_APPEND and each printf is one short write(2), so jobs
# running side by side never interleave or overwrite each other's lines. The job's working directory is named
# after its job id.
#   record.sh RECORD SECONDS            sleep SECONDS between the two lines
#   record.sh RECORD exec PROGRAM ARGS  run PROGRAM (hpcc under mpirun) between them
record=$1
shift
job=${PWD##*/}
printf 'start %s %s\n' "$job" "$$" >> "$record"
if [ "$1" = exec ]; then
    shift
    "$@"
else
    sleep "$1"
fi
rc=$?
printf 'end %s %s\n' "$job" "$$" >> "$record"
exit $rc
