# ctest driver: install the build to a temporary prefix, configure and build examples/ against
# it with find_package(fp4moe), and run the example programs.
#   -DBUILD_DIR -DSOURCE_DIR -DWORK_DIR -DGENERATOR -DCXX_COMPILER -DC_COMPILER
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
if(NOT EXISTS ${prefix}/lib/cmake/fp4moe/fp4moeConfig.cmake AND NOT EXISTS ${prefix}/lib64/cmake/fp4moe/fp4moeConfig.cmake)
  message(FATAL_ERROR "no fp4moeConfig.cmake under ${prefix}")
endif()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_C_COMPILER=${C_COMPILER}
    -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build -j 2)
run(${WORK_DIR}/build/moe_example)
run(${WORK_DIR}/build/moe_example_c)
message(STATUS "install + find_package(fp4moe) + examples: ok")
