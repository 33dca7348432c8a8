# The original design's worked example (56 states, nested genter/gexit), run by test_r_helper.py
# through `pipetrack run`. The helper's path is the first argument.
source(commandArgs(trailingOnly = TRUE)[1])

state_codes <- c(state.abb, "DC", "PR", "VI", "GU", "AS", "MP")
stopifnot(length(state_codes) == 56)
table_name <- "bdc_locations"

run_id <- track_init("DAILY_01_BDC_Locations.R", total_tasks = length(state_codes) * 2)
cat("run id:", if (is.null(run_id)) "none" else run_id, "\n")

genter("processing state location data")

for (i in seq_along(state_codes)) {
  state_code <- state_codes[i]

  genter("loading file for state '{state_code}'")
  locations <- data.frame(id = seq_len(i))
  gexit()

  genter("writing data to database")
  # Track progress within this task (56 states total)
  track_task_progress(i, length(state_codes), "Writing {state_code}: {nrow(locations)} rows")
  gexit()
}

track_finish("Successfully processed {length(state_codes)} states")
cat("done\n")
