<?php
header('X-Script: info');
echo 'info ', $_SERVER['SCRIPT_NAME'], ' ', $_SERVER['PATH_INFO'] ?? '', "\n";
