<?php
// Front controller of the interop tests (interop_test.go): answers JSON
// with selected $_SERVER keys, $_GET, $_POST and the uploaded files.
$keys = ['SCRIPT_NAME', 'PATH_INFO', 'REQUEST_URI', 'SCRIPT_FILENAME', 'QUERY_STRING',
    'HTTP_HOST', 'REMOTE_ADDR', 'REQUEST_METHOD', 'DOCUMENT_ROOT', 'HTTPS', 'SERVER_NAME',
    'SERVER_PORT', 'CONTENT_TYPE', 'SERVER_SOFTWARE', 'HTTP_X_TEST'];
$server = [];
foreach ($keys as $k) {
    if (isset($_SERVER[$k])) {
        $server[$k] = $_SERVER[$k];
    }
}
$files = [];
foreach ($_FILES as $name => $f) {
    $files[$name] = ['size' => $f['size'], 'error' => $f['error'],
        'md5' => $f['error'] === UPLOAD_ERR_OK ? md5_file($f['tmp_name']) : ''];
}
if (isset($_GET['status'])) {
    http_response_code((int)$_GET['status']);
}
if (isset($_GET['redirect'])) {
    header('Location: ' . $_GET['redirect']);
}
if (isset($_GET['log'])) {
    error_log('portico-test: ' . $_GET['log']);
}
if (isset($_GET['warn'])) {
    $a = [];
    $unused = $a['portico_missing_key'];
}
header('Content-Type: application/json');
echo json_encode(['server' => (object)$server, 'get' => (object)$_GET, 'post' => (object)$_POST, 'files' => (object)$files,
    'pid' => getmypid()]);
