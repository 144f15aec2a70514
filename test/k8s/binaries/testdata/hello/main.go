// Command hello is the module the tests of package binaries build.
package main

import "fmt"

func main() { fmt.Println("hello from a cached build") }
