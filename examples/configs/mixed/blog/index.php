<?php
// The blog's front controller: every pretty URL under /blog/ lands here
// with its original REQUEST_URI.
header('Content-Type: application/json');
echo json_encode([
    'service' => 'blog',
    'script_name' => $_SERVER['SCRIPT_NAME'],
    'path_info' => $_SERVER['PATH_INFO'] ?? '',
    'request_uri' => $_SERVER['REQUEST_URI'],
    'method' => $_SERVER['REQUEST_METHOD'],
    'post' => (object)$_POST,
]);
