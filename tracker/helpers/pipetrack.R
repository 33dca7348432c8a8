# pipetrack.R - report an R script's progress to `pipetrack run`.
#
#   source(system("pipetrack r-helper", intern = TRUE))
#   track_init("DAILY_01_BDC_Locations.R", total_tasks = 112)
#   genter("loading file for state '{state_code}'")   # {name} interpolated as glue does
#   track_task_progress(i, length(state_codes), "Writing {state_code}")
#   gexit()
#   track_finish("Processed {length(state_codes)} states")
#
# Inside `pipetrack run`, each call prints one ::pipetrack:: protocol line to stdout, which the
# wrapper consumes (see docs/protocol.md); it needs no R package and no database driver. Outside
# `pipetrack run` every function does nothing, so scripts run unchanged without pipetrack.
# `{expr}` in messages is evaluated in the caller's frame: with glue when it is installed, else by
# a small built-in equivalent (`{{` and `}}` give literal braces). Tracking never stops the
# script: a problem while reporting becomes a warning.
#
# The original design's signatures are kept: track_init(script_name, total_tasks = NULL,
# category = NULL), track_status(...), track_task_progress(items_complete, items_total = NULL,
# message = NULL), track_finish(message = NULL), track_error(error_msg, error_detail = NULL),
# genter(message), gexit(), gmessage(message); and track_count(name, n = 1), which adds n to a
# work count ("rows_written") of the current subtask and run.

.pipetrack <- new.env(parent = emptyenv())

.pipetrack$active <- function() {
  nzchar(Sys.getenv("PIPETRACK_CONTROL")) && nzchar(Sys.getenv("PIPETRACK_RUN_ID"))
}

.pipetrack$interpolate <- function(message, envir) {
  if (is.null(message)) return(NULL)
  message <- paste(as.character(message), collapse = "")
  if (!grepl("{", message, fixed = TRUE)) return(message)
  if (requireNamespace("glue", quietly = TRUE)) {
    return(paste(as.character(glue::glue(message, .envir = envir)), collapse = ""))
  }
  # Without glue: {expr} is evaluated in the caller's frame, {{ and }} are literal braces.
  open_mark <- "\001PIPETRACK_OPEN\001"
  close_mark <- "\001PIPETRACK_CLOSE\001"
  text <- gsub("{{", open_mark, message, fixed = TRUE)
  text <- gsub("}}", close_mark, text, fixed = TRUE)
  out <- ""
  repeat {
    hit <- regexpr("\\{[^{}]*\\}", text)
    if (hit < 0) break
    len <- attr(hit, "match.length")
    expr <- substr(text, hit + 1L, hit + len - 2L)
    value <- eval(parse(text = expr), envir = envir)
    out <- paste0(out, substr(text, 1L, hit - 1L), paste(format(value), collapse = ""))
    text <- substr(text, hit + len, nchar(text))
  }
  out <- paste0(out, text)
  out <- gsub(open_mark, "{", out, fixed = TRUE)
  gsub(close_mark, "}", out, fixed = TRUE)
}

.pipetrack$escape <- function(text, value = FALSE) {
  text <- enc2utf8(as.character(text))
  text <- gsub("%", "%25", text, fixed = TRUE)
  text <- gsub("\r", "%0D", text, fixed = TRUE)
  text <- gsub("\n", "%0A", text, fixed = TRUE)
  if (value) {
    text <- gsub(":", "%3A", text, fixed = TRUE)
    text <- gsub(",", "%2C", text, fixed = TRUE)
  }
  text
}

.pipetrack$count <- function(x) {
  if (is.null(x) || length(x) != 1L || is.na(x)) return(NULL)
  x <- suppressWarnings(as.numeric(x))
  if (is.na(x) || !is.finite(x) || x < 0) return(NULL)
  format(floor(x), scientific = FALSE, trim = TRUE)
}

# A work count to add: one whole number from 0 to 2^63-1, else NULL (never rounded: a count
# that is wrong is worse than one that is missing).
.pipetrack$amount <- function(x) {
  if (is.null(x) || length(x) != 1L || !is.numeric(x) || is.na(x) || !is.finite(x)) {
    return(NULL)
  }
  if (x < 0 || x != floor(x) || x >= 2^63) return(NULL)
  format(x, scientific = FALSE, trim = TRUE)
}

.pipetrack$number <- function(x) {
  if (is.null(x) || length(x) != 1L) return(NULL)
  x <- suppressWarnings(as.numeric(x))
  if (is.na(x) || !is.finite(x)) return(NULL)
  format(x, scientific = FALSE, trim = TRUE, digits = 15)
}

# emit("enter", list(items = 8), "Loading"): one protocol line on stdout.
.pipetrack$emit <- function(command, props = list(), text = NULL) {
  props <- props[!vapply(props, is.null, logical(1))]
  line <- paste0("::pipetrack::", command)
  if (length(props)) {
    pairs <- paste0(names(props), "=", vapply(props, .pipetrack$escape, character(1),
                                              value = TRUE))
    line <- paste0(line, " ", paste(pairs, collapse = ","))
  }
  if (!is.null(text)) line <- paste0(line, "::", .pipetrack$escape(text))
  cat(line, "\n", sep = "", file = stdout())
  flush(stdout())
  invisible(NULL)
}

.pipetrack$safely <- function(expr) {
  tryCatch(expr, error = function(e) {
    warning("pipetrack: could not report progress: ", conditionMessage(e), call. = FALSE)
  })
  invisible(NULL)
}

track_init <- function(script_name, total_tasks = NULL, category = NULL) {
  if (!.pipetrack$active()) return(invisible(NULL))
  .pipetrack$safely(.pipetrack$emit(
    "init",
    list(subtasks = .pipetrack$count(total_tasks),
         stage = if (is.null(category)) NULL else as.character(category)),
    if (missing(script_name) || is.null(script_name)) NULL else as.character(script_name)
  ))
  invisible(Sys.getenv("PIPETRACK_RUN_ID"))
}

genter <- function(message) {
  if (!.pipetrack$active()) return(invisible(NULL))
  envir <- parent.frame()
  .pipetrack$safely({
    text <- .pipetrack$interpolate(message, envir)
    if (nzchar(text)) .pipetrack$emit("enter", list(), text)
  })
}

gexit <- function() {
  if (!.pipetrack$active()) return(invisible(NULL))
  .pipetrack$safely(.pipetrack$emit("exit"))
}

gmessage <- function(message) {
  if (!.pipetrack$active()) return(invisible(NULL))
  envir <- parent.frame()
  .pipetrack$safely(.pipetrack$emit("message", list(), .pipetrack$interpolate(message, envir)))
}

track_task_progress <- function(items_complete, items_total = NULL, message = NULL) {
  if (!.pipetrack$active()) return(invisible(NULL))
  envir <- parent.frame()
  .pipetrack$safely({
    done <- .pipetrack$count(items_complete)
    if (!is.null(done)) {
      .pipetrack$emit("progress",
                      list(done = done, total = .pipetrack$count(items_total)),
                      .pipetrack$interpolate(message, envir))
    }
  })
}

track_count <- function(name, n = 1) {
  if (!.pipetrack$active()) return(invisible(NULL))
  .pipetrack$safely({
    amount <- .pipetrack$amount(n)
    shown <- paste(deparse(n), collapse = " ")
    if (!is.character(name) || length(name) != 1L || is.na(name) || !nzchar(name)) {
      warning("pipetrack: track_count needs one name (a string); nothing counted", call. = FALSE)
    } else if (nchar(name) > 200L) {
      warning("pipetrack: track_count: the name has ", nchar(name),
              " characters, at most 200 are allowed; nothing counted", call. = FALSE)
    } else if (is.null(amount)) {
      warning("pipetrack: track_count(\"", name, "\"): n must be one whole number from 0 to ",
              "2^63-1, not ", substr(shown, 1L, 60L), "; nothing counted", call. = FALSE)
    } else {
      .pipetrack$emit("count", list(n = amount), name)
    }
  })
}

track_finish <- function(message = NULL) {
  if (!.pipetrack$active()) return(invisible(NULL))
  envir <- parent.frame()
  .pipetrack$safely(.pipetrack$emit("finish", list(), .pipetrack$interpolate(message, envir)))
}

track_error <- function(error_msg, error_detail = NULL) {
  if (!.pipetrack$active()) return(invisible(NULL))
  envir <- parent.frame()
  .pipetrack$safely({
    text <- .pipetrack$interpolate(error_msg, envir)
    if (is.null(text) || !nzchar(text)) text <- "error"
    detail <- if (is.null(error_detail)) NULL else paste(as.character(error_detail),
                                                          collapse = "\n")
    .pipetrack$emit("error", list(detail = detail), text)
  })
}

track_status <- function(status = "RUNNING",
                         current_subtask = NULL,
                         subtask_name = NULL,
                         subtask_status = NULL,
                         overall_percent = NULL,
                         overall_message = NULL,
                         subtask_percent = NULL,
                         subtask_message = NULL,
                         subtask_items_total = NULL,
                         subtask_items_complete = NULL) {
  if (!.pipetrack$active()) return(invisible(NULL))
  # current_subtask is accepted for compatibility; the wrapper derives it from enter/exit.
  envir <- parent.frame()
  .pipetrack$safely({
    sub_status <- if (is.null(subtask_status)) "RUNNING" else toupper(subtask_status)
    if (!is.null(subtask_name) && sub_status == "RUNNING") {
      .pipetrack$emit("enter", list(items = .pipetrack$count(subtask_items_total)),
                      .pipetrack$interpolate(subtask_name, envir))
    } else if (sub_status %in% c("COMPLETED", "FAILED")) {
      .pipetrack$emit("exit", list(status = sub_status))
    }
    done <- .pipetrack$count(subtask_items_complete)
    if (!is.null(done)) {
      .pipetrack$emit("progress", list(done = done,
                                       total = .pipetrack$count(subtask_items_total)))
    }
    pct <- .pipetrack$number(subtask_percent)
    if (!is.null(pct)) .pipetrack$emit("percent", list(value = pct, scope = "subtask"))
    if (!is.null(subtask_message)) {
      .pipetrack$emit("message", list(), .pipetrack$interpolate(subtask_message, envir))
    }
    pct <- .pipetrack$number(overall_percent)
    if (!is.null(pct)) .pipetrack$emit("percent", list(value = pct, scope = "overall"))
    overall <- .pipetrack$interpolate(overall_message, envir)
    if (!is.null(overall)) .pipetrack$emit("message", list(scope = "overall"), overall)
    status <- toupper(status)
    if (status == "FINISHED") .pipetrack$emit("finish")
    if (status == "FAILED") .pipetrack$emit("error", list(), if (is.null(overall)) "failed"
                                            else overall)
  })
}
