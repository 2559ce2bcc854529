{
  "targets": [
    {
      "target_name": "orig_dst",
      "sources": ["native/orig_dst.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]
    }
  ]
}
