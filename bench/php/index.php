<?php
// The proxy-php scenario's script (bench/run.sh): a short answer, so that the
// fronts and the FastCGI round trip are measured rather than PHP.
header('Content-Type: text/plain');
echo "Hello, World!\n";
