# Run by ctest (a TEST_INCLUDE_FILES script, see tests/CMakeLists.txt) for one test program:
# registers "<suite>.<name>" for each test name the program printed when it was built, or one
# failing entry when it has not been built yet (so a missing list never passes silently).
# Expects suite, exe, list and env to be set.
if(NOT EXISTS "${list}")
  add_test("${suite}.NOT_BUILT" "${CMAKE_COMMAND}" -E false)
  return()
endif()
file(STRINGS "${list}" names)
if(NOT names)
  add_test("${suite}" "${exe}")
  set_tests_properties("${suite}" PROPERTIES ENVIRONMENT "${env}")
  return()
endif()
foreach(name IN LISTS names)
  add_test("${suite}.${name}" "${exe}")
  set_tests_properties("${suite}.${name}" PROPERTIES ENVIRONMENT "${env};CK_RUN_CASE=${name}")
endforeach()
