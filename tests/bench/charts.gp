# The benchmark charts of docs/benchmarks.md, drawn by tests/bench/run from the data files
# `otter-load report DIR --charts DATA` writes. Variables (gnuplot -e): data (that directory),
# out (where the SVGs go), servers (space-separated server names of the scale curve).
#   gnuplot -e "data='D'; out='docs'; servers='otter-memory otter-redis-3 peerjs'" tests/bench/charts.gp

set terminal svg size 720,400 dynamic enhanced font "sans,12" background rgb "white"
set datafile separator "\t"
set key outside right top
set grid ytics lc rgb "#dddddd"
set style line 1 lc rgb "#1b7837" lw 2 pt 7
set style line 2 lc rgb "#2166ac" lw 2 pt 5
set style line 3 lc rgb "#b2182b" lw 2 pt 9
set style line 4 lc rgb "#999999" lw 2 pt 11

scale(s) = data . "/scale-" . s . ".tsv"

set output out . "/bench-memory.svg"
set title "Memory per connection (RSS joined - RSS idle) / connections"
set xlabel "concurrent joined connections"
set ylabel "KiB per connection"
set yrange [0:*]
plot for [i=1:words(servers)] scale(word(servers, i)) using 1:2 with linespoints ls i title word(servers, i)

set output out . "/bench-rss.svg"
set title "Server RSS with every connection joined (Redis mode: three replicas + redis-server)"
set ylabel "MiB"
plot for [i=1:words(servers)] scale(word(servers, i)) using 1:3 with linespoints ls i title word(servers, i)

set output out . "/bench-cpu-scale.svg"
set title "Server CPU per relayed message against connections (rooms of 2)"
set ylabel "µs of CPU per message"
plot for [i=1:words(servers)] scale(word(servers, i)) using 1:4 with linespoints ls i title word(servers, i)

set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics nomirror
unset xlabel

set output out . "/bench-cpu.svg"
set title "Server CPU per relayed message (lower is better)"
set ylabel "µs of CPU per message"
plot data . "/cpu.tsv" using 2:xtic(1) ls 1 title "k=2", \
     "" using 3 ls 2 title "k=6", \
     "" using 4 ls 3 title "k=2 pinned", \
     "" using 5 ls 4 title "k=6 pinned"

set output out . "/bench-latency.svg"
set title "Relay latency at k=6, all rooms' burst at once (lower is better)"
set ylabel "ms"
plot data . "/relay-k6.tsv" using 2:xtic(1) ls 1 title "p50", \
     "" using 3 ls 2 title "p99", \
     "" using 4 ls 3 title "p99.9"
