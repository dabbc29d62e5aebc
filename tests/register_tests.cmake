# Run by ctest (a TEST_INCLUDE_FILES script, see tests/CMakeLists.txt) for one test program:
# registers "<suite>.<name>" for each test name the program printed when it was built (and
# "<suite>.<name>@<level>" for each SIMD level when it printed "@every_isa"), or one failing
# entry when it has not been built yet (so a missing list never passes silently).
# Expects suite, exe, list and env to be set.
if(NOT EXISTS "${list}")
  add_test("${suite}.NOT_BUILT" "${CMAKE_COMMAND}" -E false)
  return()
endif()
file(STRINGS "${list}" names)
set(levels "")
list(FIND names "@every_isa" every_isa)
if(every_isa GREATER -1) # a kernel suite: also at every SIMD level (testutil.h)
  list(REMOVE_ITEM names "@every_isa")
  set(levels generic avx2 avx512)
endif()
if(NOT names)
  add_test("${suite}" "${exe}")
  set_tests_properties("${suite}" PROPERTIES ENVIRONMENT "${env}" SKIP_RETURN_CODE 77)
  return()
endif()
foreach(name IN LISTS names)
  add_test("${suite}.${name}" "${exe}")
  set_tests_properties("${suite}.${name}" PROPERTIES ENVIRONMENT "${env};CK_RUN_CASE=${name}"
                       SKIP_RETURN_CODE 77)
  foreach(level IN LISTS levels)
    add_test("${suite}.${name}@${level}" "${exe}")
    set_tests_properties("${suite}.${name}@${level}" PROPERTIES
                         ENVIRONMENT "${env};CK_RUN_CASE=${name};SL_ISA=${level}"
                         SKIP_RETURN_CODE 77)
  endforeach()
endforeach()
