#!/bin/sh
# ftpipe report on the quickstart (one epoch, then again at another learning rate
# to compare): the page opened in headless Chromium (Debian's chromium, which
# `make test` installs) has no console errors and shows the expected charts and
# tables; the screenshot is kept as build/test-artifacts/report.png. The page
# names no external URL. plot_loss = true writes training_loss.svg.
. "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
ARTIFACTS="$ROOT/build/test-artifacts"
mkdir -p "$ARTIFACTS"

W=$(t_workspace)
cp "$ROOT/examples/quickstart/Ftpipe" "$ROOT/examples/quickstart/make_addition_data.sh" "$W/"
printf '\tplot_loss = true\n' > "$W/plot_line"
sed -i '/^\tsave_steps = 200$/r '"$W/plot_line" "$W/Ftpipe"
rm "$W/plot_line"

t_case "the quickstart's report: pipeline, training curves of two runs, evaluation, no external URL"
t_run "$FTPIPE" -C "$W" EPOCHS=1
t_expect_status 0
t_run "$FTPIPE" -C "$W" EPOCHS=1 LEARNING_RATE=1e-3 models/addition
t_expect_status 0
t_run "$FTPIPE" -C "$W" EPOCHS=1 LEARNING_RATE=1e-3 report -o "$W/report.html"
t_expect_status 0
t_expect_contains "ftpipe report: wrote $W/report.html"
t_run "$FTPIPE" -C "$W" EPOCHS=1 report --open
t_expect_status 0
[ "$T_OUT" = "$W/.ftpipe/report.html" ] || t_fail "--open printed '$T_OUT', expected the path alone"
R="$W/report.html"
[ "$(grep -o '<svg class="chart"' "$R" | wc -l)" -ge 5 ] || t_fail "fewer than 5 charts"
for needle in '<title>loss</title>' '<title>learning_rate</title>' '<title>grad_norm</title>' \
  '<title>tokens_per_s</title>' '<title>memory_bytes</title>' 'class="graph"' 'class="evaluation"' \
  'class="examples"' 'learning_rate=0.001' 'learning_rate=0.002' '<td>tuned</td>' '<td>base</td>' \
  'train: up to date' 'evaluate: would run' 'init: up to date'; do
  grep -qF -- "$needle" "$R" || t_fail "the report lacks $needle"
done
# Self-contained: nothing to fetch, no address of any kind.
if grep -nE 'https?:|ftp:|//[A-Za-z0-9.-]+\.[a-z]{2,}|(src|href)=|@import|url\(' "$R"; then
  t_fail "the report refers to something outside itself"
fi
t_end

t_case "plot_loss = true writes training_loss.svg with the logged loss"
S="$W/models/addition/training_loss.svg"
[ -f "$S" ] || t_fail "no $S"
grep -q '<polyline class="series"' "$S" || t_fail "training_loss.svg has no line"
points=$(sed -n 's/.*points="\([^"]*\)".*/\1/p' "$S" | wc -w)
lines=$(wc -l < "$W/models/addition/trainer_log.jsonl")
[ "$points" = "$lines" ] || t_fail "$points points for $lines logged steps"
t_end

if ! command -v chromium >/dev/null 2>&1; then
  echo "ok the report in headless Chromium # SKIP chromium is not installed (make test installs it)"
  exit 0
fi
# --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
chromium_run() { timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --enable-logging=stderr --v=0 "$@"; }

t_case "console errors are seen (a page with a deliberate error)"
printf '<!DOCTYPE html><html><body><script>undefined_function();</script></body></html>\n' > "$W/bad.html"
chromium_run --dump-dom "file://$W/bad.html" > /dev/null 2> "$W/bad.log"
grep -q ':CONSOLE.*undefined_function' "$W/bad.log" || t_fail "the deliberate error was not logged: $(tail -n 5 "$W/bad.log")"
t_end

t_case "the report in headless Chromium: no console errors, charts and tables in the DOM, a screenshot"
chromium_run --dump-dom "file://$R" > "$W/dom.html" 2> "$W/console.log" || t_fail "chromium failed"
if grep ':CONSOLE' "$W/console.log"; then t_fail "console messages while opening the report"; fi
[ "$(grep -o '<svg class="chart"' "$W/dom.html" | wc -l)" -ge 5 ] || t_fail "the DOM has fewer than 5 charts"
grep -q '<table class="evaluation">' "$W/dom.html" || t_fail "the DOM has no evaluation table"
rm -f "$ARTIFACTS/report.png"
chromium_run --window-size=1280,2400 --screenshot="$ARTIFACTS/report.png" "file://$R" 2> "$W/shot.log"
[ "$(head -c 4 "$ARTIFACTS/report.png" | od -An -c | tr -d ' ')" = "211PNG" ] || t_fail "no PNG screenshot at $ARTIFACTS/report.png"
cp "$R" "$ARTIFACTS/report.html"
t_end
