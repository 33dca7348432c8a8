# An R script that reports an error through the helper and then stops (test_r_helper.py).
source(commandArgs(trailingOnly = TRUE)[1])
track_init("ANNUAL_DEC_07_Fails.R", total_tasks = 2, category = "ANNUAL_DEC")
genter("reading {basename('input.csv')}")
result <- tryCatch(stop("input.csv has 0 rows"), error = function(e) {
  track_error(conditionMessage(e), "while reading input.csv")
  e
})
stop(result)
